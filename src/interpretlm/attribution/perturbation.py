"""Perturbation methods: ``occlusion`` (sliding window) and ``lime`` (kernel-weighted sparse fit on random masks).

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
    """Ridge regression with an unpenalized intercept: ``Z [n, F]``, ``y [n, R]`` -> (coef ``[R, F]``, intercept ``[R]``).

    Minimises ``sum_i w_i (y_i - b - z_i·c)² + alpha |c|²`` (scikit-learn's ``Ridge`` with ``sample_weight``).

    Example:
        >>> Z = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], dtype=float)
        >>> coef, b = weighted_ridge(Z, (Z @ [2.0, -1.0] + 3)[:, None], np.ones(4), 0.0)
        >>> coef.round(6).tolist(), b.round(6).tolist()
        ([[2.0, -1.0]], [3.0])
    """
    sw = np.sqrt(weights)[:, None]
    zm = (weights[:, None] * Z).sum(0) / weights.sum()
    ym = (weights[:, None] * y).sum(0) / weights.sum()
    A = (Z - zm) * sw
    B = (y - ym) * sw
    coef = np.linalg.solve(A.T @ A + alpha * np.eye(Z.shape[1]), A.T @ B)  # [F, R]
    return coef.T, ym - zm @ coef


def weighted_lasso(Z: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float | np.ndarray, *, tol: float = 1e-12,
                   max_sweeps: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Lasso with an unpenalized intercept by coordinate descent: ``Z [n, F]``, ``y [n, R]`` ->
    (coef ``[R, F]``, intercept ``[R]``).

    Minimises ``½ sum_i p_i (y_i - b - z_i·c)² + alpha |c|₁`` with ``p = weights / sum(weights)``:
    scikit-learn's ``Lasso(alpha)`` fitted with ``sample_weight=weights`` (which rescales the
    weights the same way). Each of the ``R`` columns of ``y`` is its own fit, solved together;
    ``alpha`` is one penalty or one per column ``[R]``.

    Example:
        >>> Z = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], dtype=float)
        >>> coef, b = weighted_lasso(Z, (Z @ [2.0, -1.0] + 3)[:, None], np.ones(4), 0.1)
        >>> coef.round(6).tolist(), b.round(6).tolist()
        ([[1.6, -0.6]], [3.0])
    """
    p = weights / weights.sum()
    zm = p @ Z
    ym = p @ y
    A = Z - zm
    G = A.T @ (p[:, None] * A)  # [F, F] weighted Gram matrix
    b = A.T @ (p[:, None] * (y - ym))  # [F, R]
    F, R = b.shape
    coef = np.zeros((F, R))
    diag = np.diag(G)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), (R,))
    for _ in range(max_sweeps):
        biggest = 0.0
        for j in range(F):
            if diag[j] <= 0:  # a feature never removed (or always): no information, coefficient 0
                continue
            rho = b[j] - G[j] @ coef + diag[j] * coef[j]
            new = np.sign(rho) * np.maximum(np.abs(rho) - alpha, 0.0) / diag[j]
            biggest = max(biggest, float(np.abs(new - coef[j]).max()))
            coef[j] = new
        if biggest <= tol * max(1.0, float(np.abs(coef).max())):
            break
    return coef.T, ym - zm @ coef


SAMPLINGS = ("size", "bernoulli")
DISTANCES = ("cosine", "hamming")
REGRESSIONS = ("lasso", "ridge")


def lime_samples(F: int, n_samples: int, seed: int, sampling: str = "size") -> np.ndarray:
    """``[n_samples, F]`` binary masks (True = feature kept); the first is the input itself.

    ``"size"`` (the lime package's text sampler): each other sample removes ``k`` features,
    ``k`` uniform on ``1..F``, chosen uniformly. ``"bernoulli"`` (Captum's default): each
    feature is kept with probability 1/2.

    Example:
        >>> lime_samples(4, 3, seed=0).astype(int).tolist()[0]
        [1, 1, 1, 1]
    """
    rng = np.random.default_rng(seed)
    if sampling == "bernoulli":
        Z = rng.random((n_samples, F)) < 0.5
    else:
        removed = rng.integers(1, F + 1, size=n_samples)  # [n]
        order = np.argsort(rng.random((n_samples, F)), axis=1)  # a uniform permutation per sample
        Z = np.argsort(order, axis=1) >= removed[:, None]  # rank of each feature >= k: kept
    Z[0] = True
    return Z


def lime_weights(Z: np.ndarray, distance: str = "cosine", kernel_width: float = 0.25) -> np.ndarray:
    """``[n]`` kernel weights ``exp(-d² / (2 kernel_width²))`` of masks ``Z [n, F]``.

    ``d`` is the cosine distance between the mask and the all-ones input (``1 - sqrt(kept / F)``;
    1 for the empty mask) or the Hamming distance (the fraction of features removed). The lime
    package's text explainer uses the cosine distance (×100) and ``sqrt(exp(-d²/w²))`` with
    ``w = 25``: the same weights as ``kernel_width=0.25`` here.

    Example:
        >>> lime_weights(np.array([[True, True], [True, False]]), "hamming", 0.5).round(4).tolist()
        [1.0, 0.6065]
    """
    F = Z.shape[1]
    kept = Z.sum(1)
    if distance == "hamming":
        d = 1 - kept / F
    else:
        d = np.where(kept == 0, 1.0, 1 - np.sqrt(kept / F))
    return np.exp(-(d ** 2) / (2 * kernel_width ** 2))


def lime_fit(game, F: int, n_samples: int, seed: int, *, sampling: str = "size", distance: str = "cosine",
             kernel_width: float = 0.25, regression: str = "lasso",
             alpha: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LIME on a game: ``game(keep [n, F]) -> [n, R]``; returns coef ``[R, F]``, intercept ``[R]`` and
    the kernel-weighted R² of the fit ``[R]``. The game is called once, on all samples.

    Example:
        >>> w = np.array([1.0, 2.0, -3.0, 0.5])
        >>> coef, b, r2 = lime_fit(lambda keep: (keep @ w)[:, None], 4, 64, seed=0, alpha=0.0)
        >>> coef.round(6).tolist(), r2.round(6).tolist()
        ([[1.0, 2.0, -3.0, 0.5]], [1.0])
    """
    Z = lime_samples(F, n_samples, seed, sampling)
    y = game(Z)  # [n, R]
    weights = lime_weights(Z, distance, kernel_width)
    Zf = Z.astype(float)
    if regression == "lasso":
        # the L1 penalty is relative to the target's weighted spread over the samples, so scaling
        # f scales the scores (an absolute penalty zeroes every score of a target that varies little)
        p = weights / weights.sum()
        spread = np.sqrt(p @ (y - p @ y) ** 2)  # [R]
        coef, intercept = weighted_lasso(Zf, y, weights, alpha * spread)
    else:
        coef, intercept = weighted_ridge(Zf, y, weights, alpha)
    fitted = intercept[:, None] + coef @ Zf.T  # [R, n]
    resid = ((y.T - fitted) ** 2 * weights).sum(1)
    total = ((y.T - (weights * y.T).sum(1, keepdims=True) / weights.sum()) ** 2 * weights).sum(1)
    return coef, intercept, 1 - resid / np.maximum(total, 1e-12)


@register_method("lime")
def lime(lm: LM, inputs: Any, target: TargetLike, *, n_samples: int = 256, seed: int = 0,
         sampling: str = "size", distance: str = "cosine", kernel_width: float = 0.25, regression: str = "lasso",
         alpha: float = 0.01, granularity: str = "token", spans: Sequence[tuple[int, int] | str] | None = None,
         masking: str = "token", baseline_token: str | int | None = None, batch_size: int = 16,
         chat: bool = False) -> Attribution:
    """LIME (Ribeiro et al. 2016): a kernel-weighted sparse linear fit of f on binary feature masks.

    As in the lime package's text explainer, each sample removes ``k`` features, ``k`` uniform
    on ``1..F`` (``sampling="bernoulli"``: each feature kept with probability 1/2, as in
    Captum); the first sample is the input itself. Each sample is weighted by
    ``exp(-d² / (2 kernel_width²))``, ``d`` the cosine (or ``distance="hamming"``) distance of
    its mask to the input, and f is fitted by a weighted Lasso (``regression="ridge"``: ridge)
    with penalty ``alpha``. The coefficients are the scores; every sample is scored in batches.

    Args:
        n_samples: masks scored, the input included; ``seed`` makes them reproducible.
        alpha: the Lasso's L1 penalty on the weighted mean squared error, relative to the target's
            weighted standard deviation over the samples (the ridge's absolute L2 penalty).

    Example:
        >>> il.attribute(lm, prompt, il.NextToken(" Mary"), method="lime", n_samples=256, seed=0)  # doctest: +SKIP
    """
    if n_samples < 2:
        raise PerturbationError(f"n_samples must be >= 2; got {n_samples}.")
    if kernel_width <= 0 or alpha < 0:
        raise PerturbationError(f"kernel_width must be > 0 and alpha >= 0; got {kernel_width}, {alpha}.")
    for name, value, allowed in (("sampling", sampling, SAMPLINGS), ("distance", distance, DISTANCES),
                                 ("regression", regression, REGRESSIONS)):
        if value not in allowed:
            raise PerturbationError(f"{name} must be one of {allowed}; got {value!r}.")
    ex = _build(lm, inputs, target, granularity, spans, masking, baseline_token, batch_size, chat)
    F = len(ex.features)
    full = []

    def game(keep: np.ndarray) -> np.ndarray:
        y = ex.values(keep, "lime")
        full.append(y[0])
        return y

    coef, _, r2 = lime_fit(game, F, n_samples, seed, sampling=sampling, distance=distance,
                           kernel_width=kernel_width, regression=regression, alpha=alpha)
    return ex.result("lime", coef, target_value=full[0], masking=ex.masking_label,
                     diagnostics={"r2": r2.tolist(), "n_samples": n_samples, "seed": seed},
                     options={"n_samples": n_samples, "seed": seed, "sampling": sampling, "distance": distance,
                              "kernel_width": kernel_width, "regression": regression, "alpha": alpha,
                              "granularity": granularity, "masking": masking, "baseline_token": baseline_token,
                              "batch_size": batch_size})
