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

BUILTIN = ("ioi", "induction", "greater_than")


def from_spec(spec: str, lm: object = None, *, n: int = 32, seed: int = 0) -> CircuitDataset:
    """A dataset from a command-line word: ``"ioi"``, ``"induction"``, ``"greater_than"`` or a ``.jsonl`` file.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from_spec("induction", tiny_lm("gpt2"), n=2).name
        'induction'
    """
    if str(spec).endswith(".jsonl"):
        return from_jsonl(spec, lm=lm)
    if spec in BUILTIN:
        return globals()[spec](n=n, seed=seed, lm=lm)
    raise DatasetError(f"Unknown dataset {spec!r}: give one of {', '.join(BUILTIN)} or a .jsonl file of pairs.")


__all__ += ["BUILTIN", "from_spec"]
