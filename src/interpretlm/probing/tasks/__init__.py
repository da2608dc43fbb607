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
