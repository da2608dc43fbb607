"""Linear datamodeling score (LDS; Park et al. 2023): influence scores against real retraining.

A small model is trained on the whole training set (the model the index attributes), then
retrained from the same initialisation on ``subsets`` random subsets (each a ``fraction`` of the
texts, drawn with a recorded seed). For each query, the *predicted* loss change of subset ``S`` is
``-Σ_{z∈S} score(z, q)`` (a score is a predicted loss *decrease*); the LDS of the query is the
Spearman correlation, across subsets, between predicted and actual query losses. The report gives
its mean over queries with the standard error of that mean.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..model import LM
from ..progress import track
from ..stats import spearman
from ..targets import as_target
from .errors import InfluenceError
from .gradients import lm_loss_rows
from .index import METHODS, index, read_train


def train_lm(lm: Any, texts: Sequence[str], *, steps: int, lr: float, checkpoints: int = 0,
             optimizer: str = "adam") -> list[Any]:
    """Train ``lm`` in place on ``texts``: full-batch Adam (``optimizer="sgd"``: SGD with momentum 0.9)
    on the mean over texts of each text's summed next-token loss (deterministic). Returns
    ``checkpoints`` copies of the model taken at evenly spaced steps along training (the last one
    after the final step), for TracIn.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> before = float(query_losses(lm, ["Mary went home"])[0])
        >>> _ = train_lm(lm, ["Mary went home"], steps=5, lr=1e-2)
        >>> float(query_losses(lm, ["Mary went home"])[0]) < before
        True
    """
    batch = lm.tokenize(list(texts))
    params = list(lm.model.parameters())
    frozen = [p.requires_grad for p in params]  # loaded models come frozen; train every weight, then restore
    for p in params:
        p.requires_grad_(True)
    if optimizer not in ("adam", "sgd"):
        raise InfluenceError(f"optimizer={optimizer!r}: choose 'adam' or 'sgd'.")
    opt = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr, momentum=0.9)
    loss_rows = lm_loss_rows(lm)
    every = max(1, steps // checkpoints) if checkpoints else 0
    saved = []
    lm.model.train(False)  # no dropout: retraining is deterministic given the data
    for step in track(range(1, steps + 1), "influence: training"):
        opt.zero_grad()
        loss = loss_rows(lm.forward(batch, grad=True)).mean()
        loss.backward()
        opt.step()
        if every and (step % every == 0) and len(saved) < checkpoints:
            saved.append(LM(copy.deepcopy(lm.model), lm.tokenizer, name=f"{lm.name}@{step}"))
    for p, f in zip(params, frozen):
        p.grad = None
        p.requires_grad_(f)
    return saved


def query_losses(lm: Any, queries: Sequence[str], target: Any = None) -> torch.Tensor:
    """``[n_query]`` each query's loss: ``-target`` or, with no target, its summed next-token loss."""
    with torch.no_grad():
        if target is not None:
            return -lm.score(list(queries), as_target(target)).double()
        return lm_loss_rows(lm)(lm.forward(list(queries), grad=False)).double()


@dataclass
class LDSReport:
    """The linear datamodeling score of each method, with its cost.

    Attributes:
        methods: ``{method: {"lds": mean over queries, "se": its standard error, "per_query": [...],
            "seconds": index + scoring time (the shared gradient pass counted for every gradient method)}}``.
        subset_seeds: the seed each subset was drawn with; ``subset_size``, ``n_train``, ``n_queries``.
        train_seconds / retrain_seconds: training the full model / all the subset retrainings.
        settings: training steps, learning rate, projection, modules, damping, and the fingerprint
            of the fully trained model the scores attribute (``"fingerprint"``).
        masks: ``[subsets][n_train]`` which texts (1.0) each retrained subset held.
        actual: ``[subsets][n_query]`` each query's loss after retraining on that subset; with
            ``masks`` it judges any other scores (:meth:`lds_of`), e.g. another library's.
    """

    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    subset_seeds: list[int] = field(default_factory=list)
    subset_size: int = 0
    n_train: int = 0
    n_queries: int = 0
    train_seconds: float = 0.0
    retrain_seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    masks: list[list[float]] = field(default_factory=list)
    actual: list[list[float]] = field(default_factory=list)

    def lds_of(self, scores: Any) -> dict[str, Any]:
        """The LDS of any ``[n_query, n_train]`` scores (positive: a proponent) on this report's retrained
        subsets: ``{"lds": mean over queries, "se": its standard error, "per_query": [...]}``.

        Example:
            >>> rep = LDSReport(masks=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], actual=[[2.0], [1.0], [0.5]])
            >>> rep.lds_of([[0.1, 0.9]])["lds"]  # the second text lowers the loss more: a perfect ranking
            1.0
        """
        s = torch.as_tensor(scores, dtype=torch.float64)
        masks = torch.as_tensor(self.masks, dtype=torch.float64)
        actual = torch.as_tensor(self.actual, dtype=torch.float64)
        if s.dim() != 2 or s.shape != (actual.shape[1], masks.shape[1]):
            raise InfluenceError(f"scores must be [n_query, n_train] = [{actual.shape[1]}, {masks.shape[1]}]; "
                                 f"got {list(s.shape)}.")
        pred = -(masks @ s.T)  # [subsets, n_query]: predicted loss (up to a constant) of each subset
        per_query = [spearman(pred[:, q].numpy(), actual[:, q].numpy(), constant=0.0) for q in range(s.shape[0])]
        return {"lds": float(np.mean(per_query)), "se": _se(per_query), "per_query": per_query}

    def paired(self, a: str, b: str) -> dict[str, float]:
        """The per-query difference ``LDS(a) - LDS(b)`` of two methods judged on the same queries and
        subsets: ``{"diff": its mean, "se": the standard error of that mean, "wins": the fraction of
        queries where ``a`` is higher}``. Pairing removes the spread between queries (some are easy
        for every method), so it tells whether ``a`` beats ``b`` when the two means' error bars overlap.

        Example:
            >>> rep = LDSReport(methods={"x": {"per_query": [0.5, 0.6, 0.7]}, "y": {"per_query": [0.4, 0.4, 0.6]}})
            >>> {k: round(v, 3) for k, v in rep.paired("x", "y").items()}
            {'diff': 0.133, 'se': 0.033, 'wins': 1.0}
        """
        pa, pb = np.asarray(self.methods[a]["per_query"]), np.asarray(self.methods[b]["per_query"])
        d = pa - pb
        return {"diff": float(d.mean()), "se": _se(d), "wins": float((d > 0).mean())}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A Markdown table: method, LDS ± standard error, seconds."""
        rows = ["| method | LDS (mean ± s.e. over queries) | seconds |", "| --- | --- | --- |"]
        for m, v in sorted(self.methods.items(), key=lambda kv: -kv[1]["lds"]):
            rows.append(f"| {m} | {v['lds']:.3f} ± {v['se']:.3f} | {v['seconds']:.2f} |")
        return "\n".join(rows)


def validate(model_fn: Callable[[int], Any], train: Any, queries: Sequence[str], *, target: Any = None,
             subsets: int = 50, fraction: float = 0.5, steps: int = 100, lr: float = 3e-3, seed: int = 0,
             methods: Sequence[str] = METHODS, modules: str | Sequence[str] = "all", projection: int | None = None,
             damping: float = 0.1, fisher: str = "empirical", tracin_checkpoints: int = 4,
             variants: dict[str, tuple[str, dict[str, Any]]] | None = None, optimizer: str = "adam",
             progress: Any = None) -> LDSReport:
    """Linear datamodeling score of each influence method against real retraining (small models only).

    Args:
        model_fn: ``fn(seed) -> LM``: a fresh small model (the same seed gives the same weights); every
            training run starts from ``model_fn(seed)``. It may return a copy of a *pretrained* model,
            so that ``train`` is fine-tuned on, the setting influence functions are usually judged in
            (Kronfluence's GPT-2 / WikiText LDS; ``benchmarks/influence.py``): from a random
            initialisation a tiny model learns mostly word statistics, which BM25 ranks as well.
        train: the training texts (a list or a ``.jsonl`` / ``.txt`` file).
        queries: held-out texts whose loss is predicted (with ``target``: prompts, loss ``-target``).
        subsets: retrained random subsets (≥ 50 for a meaningful LDS), each ``fraction`` of the texts.
        steps, lr, optimizer: full-batch training of every model (``"adam"``, or ``"sgd"`` with
            momentum 0.9; see :func:`train_lm`).
        seed: the initialisation seed; subset ``j`` is drawn with seed ``seed * 1000 + j + 1``.
        methods: the influence methods compared (``index``'s methods; ``tracin`` uses
            ``tracin_checkpoints`` copies taken along the full training run).
        modules, projection, damping, fisher: the index settings (see :func:`index`).
        variants: more rows, ``{label: (method, index options)}`` (e.g. ``{"ekfac, projection 16":
            ("ekfac", {"projection": 16})}``), judged on the same retrained subsets.

    Returns:
        an :class:`LDSReport`.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> rep = il.influence.validate(lambda s: tiny_lm("llama", seed=s), ["Mary went home", "John ate",
        ...     "Mary ran", "John sat"], ["Mary went"], subsets=4, steps=3, methods=["dot"], progress=False)
        >>> -1.0 <= rep.methods["dot"]["lds"] <= 1.0
        True
    """
    from ..progress import policy

    texts = read_train(train)
    queries = [queries] if isinstance(queries, str) else list(queries)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise InfluenceError(f"Unknown method {bad[0]!r}: choose among {', '.join(METHODS)}.")
    if not queries:
        raise InfluenceError("No queries were given.")
    if not 0 < fraction < 1:
        raise InfluenceError(f"fraction must lie in (0, 1); got {fraction}.")
    n = len(texts)
    size = max(1, int(round(fraction * n)))
    with policy(progress):
        t0 = time.perf_counter()
        full = model_fn(seed)
        ckpts = train_lm(full, texts, steps=steps, lr=lr, optimizer=optimizer,
                         checkpoints=tracin_checkpoints if "tracin" in methods else 0)
        train_seconds = time.perf_counter() - t0
        report = LDSReport(subset_size=size, n_train=n, n_queries=len(queries), train_seconds=train_seconds,
                           settings={"steps": steps, "lr": lr, "optimizer": optimizer, "projection": projection,
                                     "modules": modules, "damping": damping, "fisher": fisher, "fraction": fraction,
                                     "seed": seed, "fingerprint": full.fingerprint})
        predicted: dict[str, torch.Tensor] = {}
        seconds: dict[str, float] = {}
        grad_methods = [m for m in methods if m not in ("bm25", "tracin")]
        shared = None
        if grad_methods:
            t0 = time.perf_counter()
            shared = index(full, texts, method="dot", modules=modules, projection=projection, damping=damping,
                           fisher=fisher, seed=seed)
            grad_time = time.perf_counter() - t0
        for m in methods:
            t0 = time.perf_counter()
            if m == "tracin":
                every = max(1, steps // tracin_checkpoints)
                idx = index(full, texts, method="tracin", modules=modules, projection=projection, seed=seed,
                            checkpoints=ckpts, learning_rates=[lr * every] * len(ckpts))
                s = idx.scores(queries, target)
            elif m == "bm25":
                s = index(full, texts, method="bm25").scores(queries, target)
            else:
                s = shared.scores(queries, target, method=m)  # type: ignore[union-attr]
            seconds[m] = time.perf_counter() - t0 + (grad_time if m in grad_methods else 0.0)
            predicted[m] = s.double()
        for label, (m, opts) in (variants or {}).items():
            t0 = time.perf_counter()
            settings = {"modules": modules, "projection": projection, "damping": damping, "fisher": fisher,
                        "seed": seed, **opts}
            predicted[label] = index(full, texts, method=m, **settings).scores(queries, target).double()
            seconds[label] = time.perf_counter() - t0
        seeds = [seed * 1000 + j + 1 for j in range(subsets)]
        actual = torch.zeros(subsets, len(queries), dtype=torch.float64)
        masks = torch.zeros(subsets, n, dtype=torch.float64)
        t0 = time.perf_counter()
        for j in track(range(subsets), "influence: retraining subsets"):
            pick = np.random.default_rng(seeds[j]).choice(n, size=size, replace=False)
            masks[j, torch.as_tensor(pick)] = 1.0
            model = model_fn(seed)
            train_lm(model, [texts[i] for i in sorted(pick)], steps=steps, lr=lr, optimizer=optimizer)
            actual[j] = query_losses(model, queries, target)
        report.retrain_seconds = time.perf_counter() - t0
        report.subset_seeds = seeds
        report.masks, report.actual = masks.tolist(), actual.tolist()
        for m, s in predicted.items():
            report.methods[m] = {**report.lds_of(s), "seconds": seconds[m]}
    return report


def _se(values: Sequence[float]) -> float:
    """The standard error of the mean of ``values`` (NaN for fewer than two)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
