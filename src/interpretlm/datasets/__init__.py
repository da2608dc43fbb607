"""Datasets for circuit analysis: clean / corrupted prompt pairs with per-row targets.

``ioi`` (indirect object identification, ABC corruptions), ``induction`` (repeated random
tokens), ``greater_than`` and user pairs (``pairs`` from lists, ``from_jsonl``). Names that
are not single tokens for the model are dropped with a warning.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> ds = il.datasets.ioi(n=64, seed=0)  # doctest: +SKIP
    >>> il.patch(lm, ds.clean, ds.corrupted, ds.target, over="heads")  # doctest: +SKIP
"""

from .base import Answers, CircuitDataset, DatasetError
from .greater_than import GreaterThan, greater_than
from .induction import induction
from .ioi import ioi
from .user import from_jsonl, pairs

__all__ = ["Answers", "CircuitDataset", "DatasetError", "GreaterThan", "from_jsonl", "greater_than", "induction",
           "ioi", "pairs"]
