"""The texts an index reads: training sets from lists or files, and tokenization that names a
text too long for the model's context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ContextLengthError
from .errors import EmptyTrainingSetError, InfluenceError, QueryTooLongError


def read_train(train: Any) -> list[str]:
    """Training texts from a list of strings, a ``.jsonl`` file (a ``"text"`` field, or a string per
    line) or a ``.txt`` file (one text a line).

    Raises:
        EmptyTrainingSetError: no texts, or only blank ones.

    Example:
        >>> read_train(["In the beginning", "God created"])
        ['In the beginning', 'God created']
    """
    if isinstance(train, (str, Path)) and str(train).endswith((".jsonl", ".txt")):
        p = Path(train)
        if not p.exists():
            raise InfluenceError(f"Training file {str(p)!r} does not exist.")
        lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if p.suffix == ".jsonl":
            texts = []
            for i, ln in enumerate(lines):
                rec = json.loads(ln)
                if isinstance(rec, dict) and "text" not in rec:
                    raise InfluenceError(f"{p.name} line {i + 1} has no 'text' field.")
                texts.append(rec["text"] if isinstance(rec, dict) else str(rec))
        else:
            texts = lines
    elif isinstance(train, str):
        raise InfluenceError("train is one string: give a list of training texts or a .jsonl / .txt file.")
    else:
        texts = list(train) if train is not None else []
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InfluenceError(f"Training text {bad[0]} is a {type(texts[bad[0]]).__name__}, not a string.")
    if not texts or not any(t.strip() for t in texts):
        raise EmptyTrainingSetError("The training set is empty: give at least one non-blank training text.")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise EmptyTrainingSetError(f"Training text {blank[0]} is blank; remove blank texts.")
    return texts


def tokenize_texts(lm: Any, texts: list[str], what: str) -> Any:
    """``lm.tokenize(texts)``, with a text longer than the context named as a ``QueryTooLongError``
    (``what``: "query" or "training text")."""
    try:
        return lm.tokenize(texts)
    except ContextLengthError as exc:
        raise QueryTooLongError(f"A {what} is longer than the model's context ({lm.n_ctx} tokens): {exc}") from exc
