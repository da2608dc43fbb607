"""Perturbation methods: ``occlusion`` (sliding window) and ``lime`` (weighted ridge on random masks).

Features are removed by the masking recorded in the result (the baseline token, or a
zero in the attention mask). Every perturbed input of a method is scored in batches of
``batch_size``; for a ``Continuation`` target one pass scores every generated token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InterpretLMError
from ..model import LM
from ..targets import TargetLike
from .explained import Explained
from .registry import register_method
from .result import Attribution


class PerturbationError(InterpretLMError, ValueError):
    """Bad options of a perturbation method (window, samples, kernel width)."""


def _build(lm: LM, inputs: Any, target: TargetLike, granularity: str, spans, masking: str,
           baseline_token, batch_size: int, chat: bool) -> Explained:
    return Explained.build(lm, inputs, target, granularity=granularity, spans=spans, masking=masking,
                           baseline_token=baseline_token, batch_size=batch_size, chat=chat)


@register_method("occlusion")
def occlusion(lm: LM, inputs: Any, target: TargetLike, *, window: int = 1, stride: int = 1,
              granularity: str = "token", spans: Sequence[tuple[int, int] | str] | None = None,
              masking: str = "token", baseline_token: str | int | None = None, batch_size: int = 16,
              chat: bool = False) -> Attribution:
    """Occlusion: ``f(x) - f(x without a window of features)``, averaged over the windows covering
    each feature (Zeiler & Fergus 2014; Captum's ``Occlusion`` / ``FeatureAblation`` for window 1).

    Args:
        window: features removed together; ``stride``: step between windows.
        masking: ``"token"`` (replace by ``baseline_token``) or ``"attention"`` (drop from the mask).

    Returns:
        :class:`Attribution` with ``scores [features]`` (``[rows, features]`` for a continuation).

    Example:
        >>> il.attribute(lm, "The capital of France is", il.NextToken(" Paris"), method="occlusion").top(2)  # doctest: +SKIP
    """
    ex = _build(lm, inputs, target, granularity, spans, masking, baseline_token, batch_size, chat)
    F = len(ex.features)
    if window < 1 or stride < 1:
        raise PerturbationError(f"window and stride must be >= 1; got {window}, {stride}.")
    window = min(window, F)
    starts = list(range(0, F - window + 1, stride))
    if starts[-1] != F - window:
        starts.append(F - window)
    keep = np.ones((len(starts) + 1, F), dtype=bool)
    for k, s in enumerate(starts):
        keep[k + 1, s:s + window] = False
    v = ex.values(keep, "occlusion")  # [1 + windows, R]
    full = v[0]
    total = np.zeros((ex.n_rows, F))
    count = np.zeros(F)
    for k, s in enumerate(starts):
        total[:, s:s + window] += (full - v[k + 1])[:, None]
        count[s:s + window] += 1
    scores = total / count
    visible = ex.visible()
    spent = dict(vars(ex.passes))
    removed_all = full - ex.values(np.zeros((1, F), dtype=bool), "occlusion check")[0]  # [R]: remove everything
    vars(ex.passes).update(spent)  # the check's own pass is not the method's cost
    summed = np.where(visible, scores, 0.0).sum(1)
    additivity = float(np.max(np.abs(summed - removed_all) / np.maximum(np.abs(removed_all), 1e-6)))
    return ex.result("occlusion", scores, target_value=full, masking=ex.masking_label,
                     diagnostics={"window": window, "stride": stride, "additivity_error": additivity},
                     options={"window": window, "stride": stride, "granularity": granularity, "masking": masking,
                              "baseline_token": baseline_token, "batch_size": batch_size})


def weighted_ridge(Z: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an unpenalized intercept: ``Z [n, F]``, ``y [n, R]`` -> (coef ``[R, F]``, intercept ``[R]``)."""
    sw = np.sqrt(weights)[:, None]
    zm = (weights[:, None] * Z).sum(0) / weights.sum()
    ym = (weights[:, None] * y).sum(0) / weights.sum()
    A = (Z - zm) * sw
    B = (y - ym) * sw
    coef = np.linalg.solve(A.T @ A + alpha * np.eye(Z.shape[1]), A.T @ B)  # [F, R]
    return coef.T, ym - zm @ coef


@register_method("lime")
def lime(lm: LM, inputs: Any, target: TargetLike, *, n_samples: int = 256, seed: int = 0,
         kernel_width: float = 0.25, alpha: float = 1.0, granularity: str = "token",
         spans: Sequence[tuple[int, int] | str] | None = None, masking: str = "token",
         baseline_token: str | int | None = None, batch_size: int = 16, chat: bool = False) -> Attribution:
    """LIME (Ribeiro et al. 2016): a weighted ridge regression of f on random feature masks.

    Each sample keeps every feature with probability 1/2; its weight is
    ``exp(-d² / kernel_width²)`` with ``d`` the cosine distance between the mask and the full
    input (the text-LIME kernel). The coefficients are the scores.

    Args:
        n_samples: perturbed inputs scored (besides the full input); ``seed`` makes them reproducible.
        alpha: ridge penalty.

    Example:
        >>> il.attribute(lm, prompt, il.NextToken(" Mary"), method="lime", n_samples=256, seed=0)  # doctest: +SKIP
    """
    if n_samples < 2:
        raise PerturbationError(f"n_samples must be >= 2; got {n_samples}.")
    if kernel_width <= 0 or alpha < 0:
        raise PerturbationError(f"kernel_width must be > 0 and alpha >= 0; got {kernel_width}, {alpha}.")
    ex = _build(lm, inputs, target, granularity, spans, masking, baseline_token, batch_size, chat)
    F = len(ex.features)
    rng = np.random.default_rng(seed)
    Z = rng.random((n_samples, F)) < 0.5
    Z[0] = True  # the input itself anchors the local fit
    y = ex.values(Z, "lime")
    kept = Z.sum(1)
    cos_dist = 1 - kept / np.sqrt(np.maximum(kept, 1) * F)
    cos_dist[kept == 0] = 1.0
    weights = np.exp(-(cos_dist ** 2) / kernel_width ** 2)
    coef, intercept = weighted_ridge(Z.astype(float), y, weights, alpha)
    fitted = intercept[:, None] + coef @ Z.T.astype(float)  # [R, n]
    resid = ((y.T - fitted) ** 2 * weights).sum(1)
    total = ((y.T - (weights * y.T).sum(1, keepdims=True) / weights.sum()) ** 2 * weights).sum(1)
    r2 = 1 - resid / np.maximum(total, 1e-12)
    return ex.result("lime", coef, target_value=y[0], masking=ex.masking_label,
                     diagnostics={"r2": r2.tolist(), "n_samples": n_samples, "seed": seed},
                     options={"n_samples": n_samples, "seed": seed, "kernel_width": kernel_width, "alpha": alpha,
                              "granularity": granularity, "masking": masking, "baseline_token": baseline_token,
                              "batch_size": batch_size})
