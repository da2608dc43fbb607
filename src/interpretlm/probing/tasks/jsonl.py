"""User tasks from JSONL files (one JSON object per line).

Sentence labels::

    {"text": "I loved it.", "label": "positive"}

Word labels (words found left to right in the text, or given as character spans)::

    {"text": "The cat sat.", "words": ["The", "cat", "sat"], "labels": ["DET", "NOUN", "VERB"]}
    {"text": "The cat sat.", "spans": [[0, 3], [4, 7]], "labels": ["DET", "NOUN"]}

Labels are strings or integers (classes) or floats (regression). The whole file is read
and checked before anything is returned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import TaskError
from .base import Task, label_kind


def from_records(records: list[dict[str, Any]], name: str = "user", *, which: str = "last",
                 pooling: str = "last", where: str = "record") -> Task:
    """A task from dicts shaped like the JSONL lines above (all sentence- or all word-level)."""
    if not records:
        raise TaskError(f"No {where}s were given: a task needs labelled examples.")
    word_level = ["labels" in r for r in records if isinstance(r, dict)]
    if any(word_level) and not all(word_level):
        raise TaskError("Some records have 'labels' (word labels) and others 'label' (one label per text); "
                        "a task is one or the other.")
    texts: list[str] = []
    if not all(word_level):
        labels = []
        for i, r in enumerate(records):
            if not isinstance(r, dict) or "text" not in r or "label" not in r:
                raise TaskError(f"{where} {i + 1} needs a 'text' and a 'label' (or 'labels' for word labels); "
                                f"got {r!r:.80}.")
            texts.append(_text(r["text"], i, where))
            labels.append(r["label"])
        label_kind(labels, where="labels")
        return Task.sentences(name, texts, labels, pooling=pooling)
    words, spans, labels2 = [], [], []
    for i, r in enumerate(records):
        if "text" not in r:
            raise TaskError(f"{where} {i + 1} has no 'text'.")
        text = _text(r["text"], i, where)
        ys = r["labels"]
        if not isinstance(ys, list):
            raise TaskError(f"{where} {i + 1}: 'labels' must be a list (one label per word).")
        if "spans" in r:
            sp = r["spans"]
            if not isinstance(sp, list) or not all(isinstance(s, list) and len(s) == 2 and
                                                   all(isinstance(v, int) for v in s) for s in sp):
                raise TaskError(f"{where} {i + 1}: 'spans' must be a list of [start, end] character offsets.")
            if len(sp) != len(ys):
                raise TaskError(f"{where} {i + 1} has {len(sp)} spans but {len(ys)} labels; give one label per span.")
            for a, b in sp:
                if not 0 <= a < b <= len(text):
                    raise TaskError(f"{where} {i + 1}: span [{a}, {b}] is outside the text ({len(text)} characters).")
            spans.append([tuple(s) for s in sp])
            words.append([text[a:b] for a, b in sp])
        elif "words" in r:
            ws = r["words"]
            if not isinstance(ws, list):
                raise TaskError(f"{where} {i + 1}: 'words' must be a list of strings.")
            if len(ws) != len(ys):
                raise TaskError(f"{where} {i + 1} has {len(ws)} words but {len(ys)} labels; give one label per word.")
            from .base import locate_words
            spans.append(locate_words(text, ws, i + 1))
            words.append(list(ws))
        else:
            raise TaskError(f"{where} {i + 1} has word 'labels' but neither 'words' nor 'spans' to place them.")
        label_kind(ys, where=f"{where} {i + 1} labels")
        texts.append(text)
        labels2.append(ys)
    return Task.words_task(name, texts, words, labels2, spans=spans, which=which)


def _text(t: Any, i: int, where: str) -> str:
    if not isinstance(t, str) or not t.strip():
        raise TaskError(f"{where} {i + 1}: 'text' must be a non-empty string; got {t!r:.60}.")
    return t


def from_jsonl(path: str | os.PathLike, *, name: str | None = None, which: str = "last",
               pooling: str = "last") -> Task:
    """Read a task from a JSONL file (see the module docstring for the two line shapes).

    Example:
        >>> task = il.probing.tasks.from_jsonl("my.jsonl")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TaskError(f"Cannot read the task file {path}: {exc}.") from exc
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise TaskError(f"{path}, line {i + 1} is not valid JSON ({exc}).") from exc
    return from_records(records, name or path.stem, which=which, pooling=pooling, where=f"{path.name} line")
