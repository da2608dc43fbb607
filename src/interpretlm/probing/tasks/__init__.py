"""Probing tasks: linguistic (spaCy), template (sentiment, agreement, IOI) and user (JSONL) tasks.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> il.probing.tasks.pos(["The cat sat on the mat."], min_count=1)  # doctest: +SKIP
    Task('pos', 1 texts, 7 token-level examples, categorical, 5 classes)
"""

from .base import Task, label_kind, locate_words
from .corpus import sentences
from .jsonl import from_jsonl, from_records
from .linguistic import dependency, depth, pos, trees
from .templates import agreement, ioi, sentiment

__all__ = ["Task", "agreement", "dependency", "depth", "from_jsonl", "from_records", "ioi", "label_kind",
           "locate_words", "pos", "sentences", "sentiment", "trees"]

BUILTIN = ("pos", "dependency", "depth", "trees", "sentiment", "agreement", "ioi")


def from_spec(spec: str, lm: object = None, *, n: int = 300, seed: int = 0) -> Task:
    """A task from a command-line word: a built-in name (``"pos"``, ``"sentiment"``...) or a ``.jsonl`` file.

    Example:
        >>> from_spec("sentiment", n=4).n_examples
        4
    """
    from .base import TaskError

    if str(spec).endswith(".jsonl"):
        return from_jsonl(spec)
    if spec in ("pos", "dependency", "depth", "trees"):
        return globals()[spec](n=n, seed=seed)
    if spec in ("sentiment", "agreement", "ioi"):
        return globals()[spec](n, seed=seed)
    raise TaskError(f"Unknown task {spec!r}: give one of {', '.join(BUILTIN)} or a .jsonl file.")


__all__ += ["BUILTIN", "from_spec"]
