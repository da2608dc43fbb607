"""Influence functions: which training examples made the model say this (training-data attribution).

* ``il.influence.index(lm, train_texts, method="ekfac", modules="mlp", path="inf/")`` — per-example
  gradients of the chosen linear layers, projected per layer (LoGra-style: Kronecker-structured,
  the full gradient never formed), stored in atomic safetensors shards with the model's
  fingerprint, plus K-FAC / EK-FAC factors; resumable.
* ``idx.scores(queries, target=il.Continuation(" Paris"))`` — ``[n_query, n_train]`` scores:
  ``(1/N) ∇L_q^T (H + λI)^{-1} ∇L_z``, the first-order decrease of the query's loss when a training
  text is up-weighted by ``1/N`` (positive: proponent); methods ``ekfac``, ``kfac``, ``dot``,
  ``cosine``, ``trackstar``, ``tracin`` (over checkpoints) and a ``bm25`` baseline (``bm25s``).
  See :mod:`.index` for each method's normalisation.
* ``idx.top(query, k=10)`` — proponents and opponents with their text (an :class:`Influences` result).
* ``il.influence.validate(...)`` — linear datamodeling score against real retraining on random
  half-subsets (small models).
* the registered method ``influences`` (``il.influences(lm, query, target, train=[...])``; CLI
  ``interpretlm influence train.jsonl "query" --target " answer"``).

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> idx = il.influence.index(lm, ["Paris is the capital of France."] * 2, path="inf/")  # doctest: +SKIP
    >>> idx.top("The capital of France is", k=5, target=il.Continuation(" Paris"))  # doctest: +SKIP
"""

from __future__ import annotations

from .errors import (EmptyTrainingSetError, FingerprintMismatchError, InfluenceError, QueryTooLongError,
                     UnknownModuleError)
from .index import METHODS, Index, index, load, read_train
from .result import Influences
from .method import influences
from .validate import LDSReport, validate

__all__ = ["METHODS", "EmptyTrainingSetError", "FingerprintMismatchError", "Index", "InfluenceError", "Influences",
           "LDSReport", "QueryTooLongError", "UnknownModuleError", "index", "influences", "load", "read_train",
           "validate"]
