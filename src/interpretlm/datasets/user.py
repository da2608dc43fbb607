"""User-supplied clean / corrupted pairs, from lists or a JSONL file."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InterpretLMWarning
from .base import Answers, CircuitDataset, DatasetError, single_token_id, tokenizer_of


def pairs(clean: Sequence[Any], corrupted: Sequence[Any], correct: Sequence[str | int],
          wrong: Sequence[str | int] | None = None, *, lm: Any = None, name: str = "pairs") -> CircuitDataset:
    """A dataset from lists: one corrupted prompt, one answer (and one wrong answer) per clean prompt.

    Rows whose answers are not single tokens for the model are dropped with a warning.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> ds = il.datasets.pairs(["When Mary and John went to the store, John gave a drink to"],
        ...                        ["When Mary and John went to the store, Mary gave a drink to"],
        ...                        [" Mary"], [" John"], lm=tiny_lm("llama"))
        >>> len(ds)
        1
    """
    n = len(clean)
    if n == 0:
        raise DatasetError("No prompt pairs were given.")
    if len(corrupted) != n or len(correct) != n or (wrong is not None and len(wrong) != n):
        raise DatasetError(f"clean, corrupted, correct (and wrong) must have the same length; got {n}, "
                           f"{len(corrupted)}, {len(correct)}" + ("" if wrong is None else f", {len(wrong)}") + ".")
    tok = tokenizer_of(lm)
    keep, dropped = [], []
    for i in range(n):
        answers = [correct[i]] + ([wrong[i]] if wrong is not None else [])
        (keep if all(single_token_id(tok, a) is not None for a in answers) else dropped).append(i)
    if dropped:
        warnings.warn(InterpretLMWarning(f"Dropped {len(dropped)} of {n} pairs whose answers are not single tokens for this model "
                      f"(rows {dropped[:10]}{' ...' if len(dropped) > 10 else ''})."), stacklevel=2)
    if not keep:
        raise DatasetError("No pair has single-token answers for this model; pick single-token answers "
                           "(mind the leading space, e.g. ' Mary').")
    target = Answers([correct[i] for i in keep], None if wrong is None else [wrong[i] for i in keep])
    return CircuitDataset(name, [clean[i] for i in keep], [corrupted[i] for i in keep], target,
                          [{"row": i} for i in keep])


def from_jsonl(path: str | os.PathLike, *, lm: Any = None) -> CircuitDataset:
    """A dataset from a JSONL file of ``{"clean", "corrupted", "correct", "wrong"?}`` objects."""
    path = Path(path)
    rows = []
    try:
        for k, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                rows.append(json.loads(line))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"Cannot read {path} as JSONL (one JSON object per line): {exc}") from exc
    for k, r in enumerate(rows):
        missing = [f for f in ("clean", "corrupted", "correct") if f not in r]
        if missing:
            raise DatasetError(f"Line {k + 1} of {path} lacks {missing}; each line needs clean, corrupted, "
                               "correct (and optionally wrong).")
    has_wrong = any(r.get("wrong") is not None for r in rows)
    if has_wrong and not all(r.get("wrong") is not None for r in rows):
        raise DatasetError(f"Some lines of {path} have 'wrong' and some do not: give it on every line or none.")
    return pairs([r["clean"] for r in rows], [r["corrupted"] for r in rows], [r["correct"] for r in rows],
                 [r["wrong"] for r in rows] if has_wrong else None, lm=lm, name=path.stem)
