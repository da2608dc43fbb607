"""The :class:`Task`: texts, what is labelled in them (words or whole texts), and the labels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import TaskError

LEVELS = ("token", "sentence")
KINDS = ("categorical", "numeric", "distance")


def label_kind(labels: Sequence[Any], where: str = "labels") -> str:
    """``"categorical"`` for strings / ints / bools, ``"numeric"`` for floats; else a :class:`TaskError`."""
    kinds = set()
    for i, y in enumerate(labels):
        if isinstance(y, bool) or isinstance(y, (str, int)):
            kinds.add("categorical")
        elif isinstance(y, float):
            if y != y or y in (float("inf"), float("-inf")):
                raise TaskError(f"{where}[{i}] is {y}: numeric labels must be finite numbers.")
            kinds.add("numeric")
        else:
            raise TaskError(
                f"{where}[{i}] is a {type(y).__name__} ({y!r:.60}); labels must be strings or integers "
                "(classes) or floats (regression).")
    if kinds == {"categorical", "numeric"}:
        raise TaskError(f"{where} mix classes (strings/integers) and real numbers; use one kind: strings for classes, "
                        "floats for regression targets.")
    return kinds.pop() if kinds else "categorical"


@dataclass
class Task:
    """A probing task.

    Attributes:
        name: short name (``"pos"``, ``"sentiment"``...).
        texts: the texts the model reads.
        level: ``"token"`` (labels on words, read at one sub-token of each word) or
            ``"sentence"`` (one label per text, read from a pooled vector).
        kind: ``"categorical"``, ``"numeric"`` (regression) or ``"distance"`` (syntax tree
            distances for the structural probe).
        labels: sentence level: one label per text; token level: per text, one label per word.
        spans: token level: per text, each labelled word's ``(start, end)`` characters.
        words: token level: per text, each labelled word (its lower-cased form is the word
            *type* of the control task).
        heads: per text, each word's head (index into the text's words, ``-1`` for the root);
            distance tasks only.
        groups: texts with the same group id stay on the same side of the train/test split
            (the two halves of a minimal pair). Default: every text its own group.
        pooling: how a sentence-level task reads a text (``"last"`` / ``"mean"`` / ``"first"``).
        which: which sub-token of a word stands for it (``"last"`` or ``"first"``).
        info: provenance (source, dropped classes...).

    Example:
        >>> t = Task.sentences("polarity", ["I loved it", "I hated it"], ["pos", "neg"])
        >>> t.classes, t.n_examples
        (['neg', 'pos'], 2)
    """

    name: str
    texts: list[str]
    level: str
    kind: str
    labels: list[Any]
    spans: list[list[tuple[int, int]]] | None = None
    words: list[list[str]] | None = None
    heads: list[list[int]] | None = None
    groups: list[int] | None = None
    pooling: str = "last"
    which: str = "last"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- building
    @classmethod
    def sentences(cls, name: str, texts: Sequence[str], labels: Sequence[Any], *, pooling: str = "last",
                  groups: Sequence[int] | None = None, **info: Any) -> "Task":
        """A task with one label per text."""
        texts, labels = list(texts), list(labels)
        if len(texts) != len(labels):
            raise TaskError(f"{len(texts)} texts but {len(labels)} labels; give exactly one label per text.")
        return cls(name, texts, "sentence", label_kind(labels), labels,
                   groups=list(groups) if groups is not None else None, pooling=pooling, info=dict(info))

    @classmethod
    def words_task(cls, name: str, texts: Sequence[str], words: Sequence[Sequence[str]],
                   labels: Sequence[Sequence[Any]], *, spans: Sequence[Sequence[tuple[int, int]]] | None = None,
                   which: str = "last", **info: Any) -> "Task":
        """A task with one label per word; spans are found left to right when not given."""
        texts = list(texts)
        if not (len(texts) == len(words) == len(labels)):
            raise TaskError(f"{len(texts)} texts, {len(words)} word lists and {len(labels)} label lists: "
                            "give one list of words and one list of labels per text.")
        if spans is None:
            spans = [locate_words(t, w, i) for i, (t, w) in enumerate(zip(texts, words))]
        flat = [y for row in labels for y in row]
        return cls(name, texts, "token", label_kind(flat), [list(r) for r in labels],
                   spans=[[tuple(map(int, s)) for s in row] for row in spans], words=[list(w) for w in words],
                   which=which, info=dict(info))

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise a :class:`TaskError` for inconsistent lengths or labels."""
        if self.level not in LEVELS:
            raise TaskError(f"level={self.level!r} is not one of {LEVELS}.")
        if self.kind not in KINDS:
            raise TaskError(f"kind={self.kind!r} is not one of {KINDS}.")
        if not self.texts:
            raise TaskError(f"Task {self.name!r} has no texts.")
        for i, t in enumerate(self.texts):
            if not isinstance(t, str) or not t.strip():
                raise TaskError(f"Text {i} of task {self.name!r} is empty or not a string.")
        if len(self.labels) != len(self.texts):
            raise TaskError(f"Task {self.name!r} has {len(self.texts)} texts but {len(self.labels)} label entries; "
                            "give one entry per text.")
        if self.groups is not None and len(self.groups) != len(self.texts):
            raise TaskError(f"groups has {len(self.groups)} entries for {len(self.texts)} texts.")
        if self.level == "token":
            if self.spans is None or self.words is None:
                raise TaskError("A token-level task needs the words and their character spans.")
            for i, (t, w, s, y) in enumerate(zip(self.texts, self.words, self.spans, self.labels)):
                if not (len(w) == len(s) == len(y)):
                    raise TaskError(f"Text {i} has {len(w)} words, {len(s)} spans and {len(y)} labels; "
                                    "these must be equally many (one label per word).")
                for a, b in s:
                    if not 0 <= a < b <= len(t):
                        raise TaskError(f"Text {i}: the span ({a}, {b}) is not inside the text ({len(t)} characters).")
            if self.kind == "distance":
                if self.heads is None or any(len(h) != len(w) for h, w in zip(self.heads, self.words)):
                    raise TaskError("A distance task needs one head index per word.")
        if self.n_examples == 0:
            raise TaskError(f"Task {self.name!r} has no labelled examples.")

    # ----------------------------------------------------------------- views
    @property
    def n_examples(self) -> int:
        if self.level == "sentence":
            return len(self.labels)
        return sum(len(r) for r in self.labels)

    def flat_labels(self) -> list[Any]:
        """Every example's label, texts in order."""
        if self.level == "sentence":
            return list(self.labels)
        return [y for row in self.labels for y in row]

    def flat_types(self) -> list[str]:
        """Every example's word type (lower-cased word; the whole text for sentence tasks)."""
        if self.level == "sentence":
            return [t.strip().lower() for t in self.texts]
        return [w.lower() for row in self.words or [] for w in row]

    @property
    def classes(self) -> list[Any]:
        """Sorted distinct labels (categorical tasks)."""
        if self.kind != "categorical":
            return []
        return sorted(set(self.flat_labels()), key=lambda y: (str(type(y)), y))

    def counts(self) -> Counter:
        return Counter(self.flat_labels())

    def drop_rare(self, min_count: int) -> "Task":
        """A copy without the examples of classes seen fewer than ``min_count`` times."""
        if self.kind != "categorical":
            return self
        c = self.counts()
        keep = {y for y, n in c.items() if n >= min_count}
        dropped = {str(y): n for y, n in c.items() if y not in keep}
        if not keep:
            raise TaskError(f"Every class of task {self.name!r} has fewer than {min_count} examples; give more texts "
                            "or a smaller min_count (min_count=1 keeps every class).")
        info = dict(self.info, dropped_classes=dropped)
        if self.level == "sentence":
            idx = [i for i, y in enumerate(self.labels) if y in keep]
            return Task(self.name, [self.texts[i] for i in idx], "sentence", self.kind, [self.labels[i] for i in idx],
                        groups=[self.groups[i] for i in idx] if self.groups else None, pooling=self.pooling,
                        which=self.which, info=info)
        rows = [[j for j, y in enumerate(r) if y in keep] for r in self.labels]
        return Task(self.name, list(self.texts), "token", self.kind,
                    [[r[j] for j in js] for r, js in zip(self.labels, rows)],
                    spans=[[s[j] for j in js] for s, js in zip(self.spans or [], rows)],
                    words=[[w[j] for j in js] for w, js in zip(self.words or [], rows)],
                    heads=None, groups=self.groups, pooling=self.pooling, which=self.which, info=info)

    def __repr__(self) -> str:
        extra = f", {len(self.classes)} classes" if self.kind == "categorical" else ""
        return (f"Task({self.name!r}, {len(self.texts)} texts, {self.n_examples} {self.level}-level examples, "
                f"{self.kind}{extra})")


def locate_words(text: str, words: Sequence[str], row: int = 0) -> list[tuple[int, int]]:
    """Character spans of ``words`` found left to right in ``text``."""
    spans, pos = [], 0
    for w in words:
        if not isinstance(w, str) or not w:
            raise TaskError(f"Text {row}: every word must be a non-empty string; got {w!r}.")
        at = text.find(w, pos)
        if at < 0:
            raise TaskError(f"Text {row}: the word {w!r} was not found in {text!r:.80} after character {pos}; "
                            "words must appear in the text in order (or give 'spans').")
        spans.append((at, at + len(w)))
        pos = at + len(w)
    return spans
