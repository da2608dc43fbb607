"""Clean / corrupted prompt pairs with per-row answers: the datasets of circuit analysis."""

from __future__ import annotations

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

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        if len(self.correct) != batch.size or (self.wrong is not None and len(self.wrong) != batch.size):
            raise TargetError(f"Answers has {len(self.correct)} answers for {batch.size} prompts: give one per prompt.")
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
