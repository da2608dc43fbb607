"""The registered method ``influences``: one query's proponents and opponents among training texts.

``il.influences(lm, query, target, train=[...], estimator="ekfac")`` builds (or reopens, with
``path=``) an index and returns :meth:`Index.top`. On the command line:
``interpretlm influence train.jsonl "query" --target " answer"``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import torch

from ..registry import CheckSpec, register
from .errors import InfluenceError
from .index import index as build_index
from .result import Influences


def train_from_word(word: str, lm: Any) -> dict[str, Any]:
    """Command line: the leading word of ``interpretlm influence TRAIN PROMPT`` is the training file."""
    return {"train": word}


@register("influences", family="influence", takes="prompt", result=Influences, target="optional",
          summary="training texts that raise (proponents) or lower (opponents) the target: EK-FAC, K-FAC, TracIn, "
                  "TrackStar, gradient dot/cosine or BM25 over projected per-example gradients",
          check=CheckSpec("projection_error", 0.5,
                          advice="The per-layer projection distorts the query gradient's norm: raise projection= "
                                 "(or None for exact gradients)."),
          demo="interpretlm.influence.demo:influence_section", demo_order=95,
          cli_input="interpretlm.influence.method:train_from_word")
def influences(lm: Any, prompt: Any, target: Any = None, *, train: Any, estimator: str = "ekfac",
               modules: str | Sequence[str] = "mlp", k: int = 10, projection: int | None = 32,
               path: str | None = None, seed: int = 0, damping: float = 0.1, fisher: str = "empirical",
               query_rank: int | None = None, batch_size: int = 8) -> Influences:
    """Which training texts made the model say ``target`` after ``prompt``: the ``k`` strongest
    proponents and opponents, each with its text and score.

    A score is ``(1/N) ∇L_q^T (H + λI)^{-1} ∇L_z``: the first-order decrease of the query's loss
    ``L_q = -target`` when training text ``z`` is up-weighted by ``1/N`` (positive: proponent); see
    :mod:`interpretlm.influence.index` for each estimator's ``H`` and normalisation.

    Args:
        lm: the model.
        prompt: the query text (or its token ids).
        target: what is explained (``il.Continuation(" Paris")``...); ``None``: the prompt's own loss.
        train: the training texts (a list, or a ``.jsonl`` / ``.txt`` file).
        estimator: ``"ekfac"``, ``"kfac"``, ``"dot"``, ``"cosine"``, ``"trackstar"`` or ``"bm25"``
            (TracIn needs checkpoints: use :func:`interpretlm.influence.index`).
        modules: the linear layers (``"mlp"``, ``"attn"``, ``"all"`` or names).
        k: proponents and opponents returned.
        projection: projected width per side of each layer (``None``: exact gradients).
        path: keep the index in this folder (reused by later calls); ``None``: a temporary one.
        seed, damping, fisher, query_rank, batch_size: see :func:`interpretlm.influence.index`.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> r = il.influences(tiny_lm("llama"), "Mary went", il.Continuation(" home"),
        ...                   train=["Mary went home", "John ate"], estimator="dot", progress=False)
        >>> r.n_train, len(r.scores)
        (2, 2)
    """
    if estimator == "tracin":
        raise InfluenceError("estimator='tracin' needs checkpoints: use il.influence.index(lm, texts, "
                             "method='tracin', checkpoints=[...]).top(query).")
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.reshape(-1).tolist()
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            raise InfluenceError("The query is empty: give the text whose prediction is explained.")
        query: Any = [int(t) for t in prompt]
    else:
        query = prompt
    with tempfile.TemporaryDirectory(prefix="interpretlm-influence-") as tmp:
        idx = build_index(lm, train, method=estimator, modules=modules, path=path or tmp, projection=projection,
                          batch_size=batch_size, seed=seed, fisher=fisher, damping=damping)
        return idx.top(query, k=int(k), target=target, query_rank=query_rank)
