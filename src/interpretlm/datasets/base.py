"""Clean / corrupted prompt pairs with per-row answers: the datasets of circuit analysis."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InterpretLMError, InterpretLMWarning, TargetError
from ..targets import Target, gather_at, prediction_positions
from ..tokens import Batch

if TYPE_CHECKING:
    from ..model import LM


class DatasetError(InterpretLMError, ValueError):
    """A dataset that cannot be built (no valid rows, malformed file...)."""


def tokenizer_of(lm: Any) -> Any:
    """The tokenizer of an :class:`LM`, a tokenizer itself, or (``None``) the default model's."""
    if lm is None:
        return default_tokenizer()
    return getattr(lm, "tokenizer", lm)


_DEFAULT_TOKENIZER: list[Any] = []


def default_tokenizer() -> Any:
    """The built-in default model's tokenizer (read from the converted cache; no weights loaded)."""
    if not _DEFAULT_TOKENIZER:
        from transformers import AutoTokenizer

        from ..loading import DEFAULT_MODEL, builtin_folder

        _DEFAULT_TOKENIZER.append(AutoTokenizer.from_pretrained(str(builtin_folder(DEFAULT_MODEL))))
    return _DEFAULT_TOKENIZER[0]


def single_token_id(tokenizer: Any, text: str | int) -> int | None:
    """The id of ``text`` when it is exactly one token, else ``None``."""
    if isinstance(text, int):
        return text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


Index = int | slice | Sequence[int]


def select_rows(values: Sequence[Any], index: Index) -> list[Any]:
    """The rows of ``values`` at ``index`` (an int, a slice or a list of ints), always a list.

    Example:
        >>> select_rows(["a", "b", "c"], slice(0, 2)), select_rows("abc", [2, 0]), select_rows("abc", -1)
        (['a', 'b'], ['c', 'a'], ['c'])
    """
    values = list(values)
    if isinstance(index, slice):
        return values[index]
    if isinstance(index, int) or (hasattr(index, "__index__") and not isinstance(index, bool)):
        i = int(index)
        if not -len(values) <= i < len(values):
            raise IndexError(f"row {i} is out of range: there are {len(values)} rows.")
        return [values[i]]
    return [values[int(i)] for i in index]


def count_hint(kind: str, n_target: int, n_prompts: int) -> str:
    """The message of a per-row target given another number of prompts (it says how to slice)."""
    hint = (" To run on part of a dataset, slice the dataset, not its prompts: ds[:8] has ds[:8].clean, "
            "ds[:8].corrupted and the matching ds[:8].target (or slice the target too: ds.target[:8])."
            if n_target > n_prompts else "")
    return f"{kind} has {n_target} rows for {n_prompts} prompts: give one per prompt.{hint}"


def keep_single_tokens(tokenizer: Any, words: Sequence[str], what: str) -> list[str]:
    """``words`` that are single tokens; warn about the ones dropped (never mis-tokenize silently)."""
    keep = [w for w in words if single_token_id(tokenizer, w) is not None]
    dropped = [w for w in words if w not in keep]
    if dropped:
        warnings.warn(InterpretLMWarning(f"Dropped {len(dropped)} {what} that are not single tokens for this tokenizer: "
                      f"{dropped[:8]}{' ...' if len(dropped) > 8 else ''}"), stacklevel=3)
    return keep


@dataclass(frozen=True)
class Answers(Target):
    """Per-row answers: ``logit(correct[i]) - logit(wrong[i])`` for row ``i``, or ``log p(correct[i])``.

    Args:
        correct: one single-token answer per row (a string with its leading space, or an id).
        wrong: one competing answer per row (a logit difference), or ``None`` (log-probability).

    Example:
        >>> import interpretlm as il
        >>> t = il.datasets.Answers([" Mary", " Tom"], [" John", " Anna"])
    """

    correct: Sequence[str | int]
    wrong: Sequence[str | int] | None = None
    reads_prediction_position = True

    def __post_init__(self) -> None:  # tuples: the target is immutable data
        object.__setattr__(self, "correct", tuple(self.correct))
        if self.wrong is not None:
            object.__setattr__(self, "wrong", tuple(self.wrong))

    def __len__(self) -> int:
        return len(self.correct)

    def __getitem__(self, index: Index) -> "Answers":
        """The answers of the rows at ``index`` (``ds.target[:8]``), still an :class:`Answers`."""
        return dataclasses.replace(self, correct=select_rows(self.correct, index),
                                   wrong=None if self.wrong is None else select_rows(self.wrong, index))

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        if len(self.correct) != batch.size or (self.wrong is not None and len(self.wrong) != batch.size):
            raise TargetError(count_hint("Answers", len(self.correct), batch.size))
        cols = [self.correct] + ([self.wrong] if self.wrong is not None else [])
        ids = torch.empty(batch.size, len(cols), dtype=torch.long)
        for j, col in enumerate(cols):
            for i, tok in enumerate(col):
                tid = single_token_id(lm.tokenizer, tok)
                if tid is None or not 0 <= tid < lm.vocab_size:
                    raise TargetError(f"Answer {tok!r} of row {i} is not a single token for this model. Build the "
                                      "dataset for this model (il.datasets.ioi(..., lm=lm)), which drops such "
                                      "names with a warning, or pick single-token answers.")
                ids[i, j] = tid
        batch.extra["answer_ids"] = ids
        return batch

    def __call__(self, out) -> torch.Tensor:
        row = gather_at(out.logits, prediction_positions(self._model(), out.batch))
        ids = out.batch.extra["answer_ids"].to(row.device)
        if self.wrong is not None:
            return row.gather(1, ids[:, :1])[:, 0] - row.gather(1, ids[:, 1:2])[:, 0]
        return torch.log_softmax(row.float(), -1).gather(1, ids[:, :1])[:, 0]



@dataclass
class CircuitDataset:
    """Clean prompts, their corrupted counterparts and the target that tells them apart.

    Attributes:
        name: what the task is (``"ioi"``, ``"induction"``...).
        clean, corrupted: prompts (strings or token-id lists), one corrupted per clean.
        target: the metric, usually per-row :class:`Answers`.
        meta: per-row details (names, template, years...).

    Use ``ds.clean``, ``ds.corrupted``, ``ds.target`` with ``il.patch`` and friends, or
    pass the dataset itself to ``il.discover_circuit``.
    """

    name: str
    clean: list[Any]
    corrupted: list[Any]
    target: Target
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clean)

    def __getitem__(self, index: Index) -> "CircuitDataset":
        """The rows at ``index`` as a dataset: prompts, per-row target and meta sliced together.

        Example:
            >>> import interpretlm as il
            >>> from interpretlm.testing import tiny_lm
            >>> ds = il.datasets.pairs(["a Mary", "a John", "a Tom"], ["a John", "a Mary", "a Anna"],
            ...                        [" Mary", " John", " Tom"], [" John", " Mary", " Anna"], lm=tiny_lm())
            >>> small = ds[:2]
            >>> len(small), small.target.correct
            (2, (' Mary', ' John'))
        """
        target = self.target
        if hasattr(target, "__getitem__") and hasattr(target, "__len__"):
            if len(target) != len(self):
                raise DatasetError(f"The target has {len(target)} rows for {len(self)} prompts.")
            target = target[index]
        return dataclasses.replace(self, clean=select_rows(self.clean, index),
                                   corrupted=select_rows(self.corrupted, index), target=target,
                                   meta=select_rows(self.meta, index) if self.meta else [])

    def __repr__(self) -> str:
        return f"CircuitDataset({self.name!r}, n={len(self)}, target={type(self.target).__name__})"

    def to_jsonl(self, path: str | os.PathLike) -> Path:
        """Write one JSON object per row (``clean``, ``corrupted``, ``correct``, ``wrong``); reads back with
        :func:`interpretlm.datasets.from_jsonl`."""
        if not isinstance(self.target, Answers):
            raise DatasetError(f"Only datasets with per-row Answers can be written as JSONL; this one has "
                               f"{type(self.target).__name__}.")
        path = Path(path)
        wrong = self.target.wrong or [None] * len(self)
        with open(path, "w", encoding="utf-8") as f:
            for c, x, a, b in zip(self.clean, self.corrupted, self.target.correct, wrong):
                f.write(json.dumps({"clean": c, "corrupted": x, "correct": a, "wrong": b}) + "\n")
        return path
