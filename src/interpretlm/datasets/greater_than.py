"""Greater-than (Hanna et al., 2023): "The war lasted from the year 1732 to the year 17" -> 33..99."""

from __future__ import annotations

import random
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import TargetError
from ..targets import Target, gather_at, prediction_positions
from .base import CircuitDataset, DatasetError, Index, count_hint, select_rows, tokenizer_of

NOUNS = [" war", " expedition", " project", " reign", " drought", " strike", " famine", " siege", " journey",
         " festival", " trial", " campaign"]
TEMPLATE = "The{noun} lasted from the year {cc}{yy} to the year {cc}"


@dataclass(frozen=True)
class GreaterThan(Target):
    """``P(year > YY) - P(year <= YY)`` for the next year token, per row.

    With two-digit year tokens (``"00"`` .. ``"99"``, as in GPT-2) the probabilities are
    summed over those; with digit tokenizers (Llama, SmolLM) over the first digit, the
    digit equal to YY's first digit counting for neither side.

    Args:
        years: the start year's last two digits ``YY`` per row.
    """

    years: list[int]
    reads_prediction_position = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "years", tuple(int(y) for y in self.years))

    def __len__(self) -> int:
        return len(self.years)

    def __getitem__(self, index: Index) -> "GreaterThan":
        """The years of the rows at ``index`` (``ds.target[:8]``), still a :class:`GreaterThan`."""
        return dataclasses.replace(self, years=select_rows(self.years, index))

    def prepare(self, lm, batch):
        if len(self.years) != batch.size:
            raise TargetError(count_hint("GreaterThan", len(self.years), batch.size))
        tok = lm.tokenizer
        two = [tok(f"{y:02d}", add_special_tokens=False)["input_ids"] for y in range(100)]
        if all(len(t) == 1 for t in two):
            ids = torch.tensor([t[0] for t in two])
            greater = torch.tensor([[1.0 if y > yy else -1.0 for y in range(100)] for yy in self.years])
        else:
            one = [tok(str(d), add_special_tokens=False)["input_ids"] for d in range(10)]
            if not all(len(t) == 1 for t in one):
                raise TargetError("This tokenizer has neither single-token two-digit numbers nor single-token "
                                  "digits, so the next year cannot be read from one token.")
            ids = torch.tensor([t[0] for t in one])
            greater = torch.tensor([[1.0 if d > yy // 10 else (-1.0 if d < yy // 10 else 0.0) for d in range(10)]
                                    for yy in self.years])
        batch.extra["year_ids"] = ids
        batch.extra["year_sign"] = greater
        return batch

    def __call__(self, out) -> torch.Tensor:
        row = gather_at(out.logits, prediction_positions(self._model(), out.batch))
        p = torch.softmax(row.float(), -1)[:, out.batch.extra["year_ids"].to(row.device)]
        return (p * out.batch.extra["year_sign"].to(p.device)).sum(-1)



def greater_than(n: int = 32, seed: int = 0, *, lm: Any = None) -> CircuitDataset:
    """Greater-than prompts; the corrupted start year ends in ``01`` (nothing is smaller).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> ds = il.datasets.greater_than(n=2, lm=tiny_lm("gpt2"))  # doctest: +SKIP
    """
    if n < 1:
        raise DatasetError(f"n must be at least 1; got {n}.")
    tok = tokenizer_of(lm)
    # Single-token nouns keep every prompt the same length (for positions="each"); clean and
    # corrupted prompts share their noun, so longer nouns are still valid pairs.
    single = [w for w in NOUNS if len(tok(w, add_special_tokens=False)["input_ids"]) == 1]
    nouns = single or NOUNS
    rng = random.Random(seed)
    clean, corrupted, years, meta = [], [], [], []
    for _ in range(n):
        noun, cc, yy = rng.choice(nouns), rng.randint(11, 17), rng.randint(2, 98)
        clean.append(TEMPLATE.format(noun=noun, cc=cc, yy=f"{yy:02d}"))
        corrupted.append(TEMPLATE.format(noun=noun, cc=cc, yy="01"))
        years.append(yy)
        meta.append({"century": cc, "year": yy})
    return CircuitDataset("greater-than", clean, corrupted, GreaterThan(years), meta)
