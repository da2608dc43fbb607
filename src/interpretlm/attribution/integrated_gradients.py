"""Integrated Gradients with adaptive refinement of the path.

IG attributes ``f(x) - f(b)`` to the features along the straight path ``b + α (x - b)``:
``IG_i = (x_i - b_i) ∫ ∂f/∂x_i(α) dα``. On language models the path often has sharp
jumps (on SmolLM2-135M, log p(" Mary") rises by 6 nats within 1/400 of the path), so
uniform steps give attributions whose sum is far from ``f(x) - f(b)``.

The change of f over any sub-interval ``[a, c]`` is known exactly from two forward
passes, so each sub-interval's quadrature can be checked against it. The default
``refine=True`` starts from ``n_steps`` uniform points (Simpson panels) and halves the
panels whose quadrature disagrees most with their exact change, until the scores add
up to ``f(x) - f(b)`` within ``tol`` (and no panel is off by more than ``tol / 4``) or
the pass budget is spent (then it
says so in the result and warns). ``refine=False`` with ``quadrature="gausslegendre"`` and
``n_steps=50`` reproduces Captum's ``IntegratedGradients`` numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import CheckWarning, InterpretLMError
from ..model import LM
from ..targets import TargetLike
from .explained import Explained, progress
from .registry import register_method
from .result import Attribution

QUADRATURES = ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")


class IGError(InterpretLMError, ValueError):
    """Bad Integrated Gradients options (baseline, quadrature, steps)."""


class CompletenessWarning(CheckWarning):
    """An attribution whose scores do not add up to f(x) - f(baseline) within tolerance."""


def quadrature(method: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of an ``n``-point rule on ``[0, 1]`` (the same rules as Captum).

    Example:
        >>> a, w = quadrature("gausslegendre", 4); round(float(w.sum()), 6)
        1.0
    """
    if method not in QUADRATURES:
        raise IGError(f"quadrature must be one of {QUADRATURES}; got {method!r}.")
    if n < 1 or (method == "riemann_trapezoid" and n < 2):
        raise IGError(f"n_steps must be >= {2 if method == 'riemann_trapezoid' else 1}; got {n}.")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (x + 1), 0.5 * w
    if method == "riemann_trapezoid":
        w = np.full(n, 1.0 / (n - 1))
        w[0] *= 0.5
        w[-1] *= 0.5
        return np.linspace(0, 1, n), w
    w = np.full(n, 1.0 / n)
    if method == "riemann_left":
        return np.linspace(0, 1 - 1 / n, n), w
    if method == "riemann_right":
        return np.linspace(1 / n, 1, n), w
    return np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n), w


PointFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""alphas ``[m]`` -> (f ``[m, R]``, contributions ``[m, R, F]``: each feature's ``∂f/∂x · (x - b)``),
both from one forward and backward pass at ``b + α (x - b)``."""


@dataclass
class Panel:
    """A sub-interval ``[a, c]`` of the path with its midpoint ``m = (a + c) / 2``."""

    a: float
    c: float
    fa: np.ndarray   # [R]
    fm: np.ndarray
    fc: np.ndarray
    ga: np.ndarray   # [R, F] contributions at a, m, c
    gm: np.ndarray
    gc: np.ndarray

    @property
    def q(self) -> np.ndarray:
        """Simpson's rule of the contributions over the panel: ``[R, F]``."""
        return (self.c - self.a) / 6 * (self.ga + 4 * self.gm + self.gc)

    def error(self, scale: np.ndarray) -> float:
        """Largest relative disagreement (over rows) between the quadrature and the exact change."""
        return float(np.max(np.abs(self.q.sum(-1) - (self.fc - self.fa)) / scale))


@dataclass
class PathIntegral:
    """What :func:`integrate_path` found."""

    scores: np.ndarray       # [R, F]
    f0: np.ndarray           # [R] f(baseline)
    f1: np.ndarray           # [R] f(x)
    panels: list
    gradient_evaluations: int
    converged: bool
    path_error: float        # sum over panels of |local disagreement| / |f(x) - f(b)| (an upper bound, noise included)

    @property
    def completeness_error(self) -> float:
        delta = self.f1 - self.f0
        return float(np.max(np.abs(self.scores.sum(-1) - delta) / np.maximum(np.abs(delta), 1e-12)))


def integrate_path(point_fn: PointFn, *, n_steps: int = 33, tol: float = 0.01, max_evals: int = 1024,
                   split_batch: int = 8, show_progress: bool | None = None) -> PathIntegral:
    """Adaptive Simpson integral of the path contributions, checked panel by panel.

    Every evaluation is one forward + backward at a point of the path and gives both f and
    the gradient, so a panel ``[a, c]`` with its midpoint is checked for free: its Simpson
    sum must equal ``f(c) - f(a)``. The panels that disagree most are halved (two new
    points each) until the check passes or ``max_evals`` points were evaluated.

    Args:
        point_fn: ``alphas [m] -> (f [m, R], contributions [m, R, F])``.
        n_steps: points of the first, uniform pass (rounded up to an odd number).
        tol: stop when the completeness error is ``<= tol`` and no panel is off by more
            than ``tol / 4`` of ``|f(x) - f(b)|`` (every row).
        max_evals: budget of points (forward + backward each).
        split_batch: panels halved per round (their ``2 * split_batch`` points form one batch).

    Returns:
        :class:`PathIntegral` with ``scores [R, F]`` and the checks.

    Example:
        >>> w = np.array([1.0, -2.0])  # a linear f: IG is exact with one panel
        >>> fn = lambda a: ((a * w.sum())[:, None], np.broadcast_to(w, (len(a), 1, 2)).copy())
        >>> r = integrate_path(fn, n_steps=3)
        >>> r.scores.round(6).tolist(), r.completeness_error < 1e-9
        ([[1.0, -2.0]], True)
    """
    if n_steps < 3:
        raise IGError(f"n_steps must be >= 3 for the adaptive rule; got {n_steps}.")
    n_panels = max(1, (n_steps - 1) // 2 + ((n_steps - 1) % 2))
    alphas = np.linspace(0.0, 1.0, 2 * n_panels + 1)
    f, g = point_fn(alphas)
    panels = [Panel(alphas[2 * i], alphas[2 * i + 2], f[2 * i], f[2 * i + 1], f[2 * i + 2],
                    g[2 * i], g[2 * i + 1], g[2 * i + 2]) for i in range(n_panels)]
    evals = len(alphas)
    scale = np.maximum(np.abs(f[-1] - f[0]), 1e-12)
    with progress(max_evals, "integrated gradients", show_progress) as bar:
        bar.update(evals)
        while True:
            errs = np.array([p.error(scale) for p in panels])
            if _converged(panels, errs, scale, tol) or evals + 2 > max_evals:
                break
            k = int(min(split_batch, len(panels), (max_evals - evals) // 2))
            worst = sorted(np.argsort(-errs)[:k].tolist())
            new_alphas = np.array([[(3 * panels[i].a + panels[i].c) / 4, (panels[i].a + 3 * panels[i].c) / 4]
                                   for i in worst]).ravel()
            nf, ng = point_fn(new_alphas)
            evals += len(new_alphas)
            bar.update(len(new_alphas))
            new: dict[int, list[Panel]] = {}
            for j, i in enumerate(worst):
                p, m = panels[i], (panels[i].a + panels[i].c) / 2
                new[i] = [Panel(p.a, m, p.fa, nf[2 * j], p.fm, p.ga, ng[2 * j], p.gm),
                          Panel(m, p.c, p.fm, nf[2 * j + 1], p.fc, p.gm, ng[2 * j + 1], p.gc)]
            panels = [q for i, p in enumerate(panels) for q in (new[i] if i in new else [p])]
    errs = np.array([p.error(scale) for p in panels])
    scores = np.sum([p.q for p in panels], axis=0)
    return PathIntegral(scores, f[0], f[-1], panels, evals, _converged(panels, errs, scale, tol), float(errs.sum()))


def _converged(panels: list[Panel], errs: np.ndarray, scale: np.ndarray, tol: float) -> bool:
    """The global completeness error is within ``tol`` and no single panel is off by more than
    ``tol / 4`` (so a good sum cannot hide panels whose errors cancel).

    The sum of the panels' absolute errors is not used to stop: the float32 noise of f
    (about 1e-4 nats) enters it once per panel and grows with refinement, while in the
    global sum the exact changes telescope to ``f(x) - f(b)`` and the noise cancels.
    """
    total = np.sum([p.q for p in panels], axis=0).sum(-1)
    delta = panels[-1].fc - panels[0].fa
    return bool(np.max(np.abs(total - delta) / scale) <= tol and errs.max() <= tol / 4)


def fixed_path(grad_fn: Callable[[np.ndarray], np.ndarray], value_fn: Callable[[np.ndarray], np.ndarray],
               method: str, n_steps: int) -> PathIntegral:
    """Non-adaptive IG (Captum's scheme): one rule of ``n_steps`` nodes over ``[0, 1]``.

    ``grad_fn: alphas -> [m, R, F]`` contributions; ``value_fn: alphas -> [m, R]`` (used
    for f(b) and f(x) only, to report the completeness error).
    """
    alphas, weights = quadrature(method, n_steps)
    scores = np.einsum("m,mrf->rf", weights, grad_fn(alphas))
    fe = value_fn(np.array([0.0, 1.0]))
    return PathIntegral(scores, fe[0], fe[1], [], n_steps, True, float("nan"))


def _baseline_embeddings(ex: Explained, baseline: str | None) -> tuple[torch.Tensor, str]:
    """``[pos, d_model]`` baseline embeddings (only feature positions differ from the input)."""
    x = ex.embeddings()
    pos = [p for group in ex.features.positions for p in group]
    b = x.clone()
    if baseline in (None, "token"):
        b[pos] = ex.embeddings(torch.full_like(ex.batch.input_ids, ex.mask_id))[pos]
        return b, f"token:{ex.lm.tokenizer.convert_ids_to_tokens(ex.mask_id)}"
    if baseline == "zero":
        b[pos] = 0
        return b, "zero"
    if isinstance(baseline, str):
        ids = ex.lm.tokenizer(baseline, add_special_tokens=False)["input_ids"]
        if len(ids) != len(pos):
            raise IGError(f"The baseline text {baseline!r} is {len(ids)} tokens but {len(pos)} token positions are "
                          "explained; give a baseline of the same token length (e.g. swap names), or use "
                          "baseline='token' / 'zero'.")
        ids_t = ex.batch.input_ids.clone()
        ids_t[0, pos] = torch.tensor(ids)
        b[pos] = ex.embeddings(ids_t)[pos]
        return b, f"text:{baseline}"
    raise IGError(f"baseline must be 'token', 'zero' or a text of the prompt's token length; got {baseline!r}.")


@register_method("integrated_gradients")
def integrated_gradients(lm: LM, inputs: Any, target: TargetLike, *, baseline: str | None = "token",
                         baseline_token: str | int | None = None, quadrature: str = "gausslegendre",
                         n_steps: int | None = None, refine: bool = True, tol: float = 0.01,
                         max_evals: int = 1024, granularity: str = "token",
                         spans: Sequence[tuple[int, int] | str] | None = None, batch_size: int = 16,
                         chat: bool = False) -> Attribution:
    """Integrated Gradients over the input embeddings.

    Args:
        baseline: ``"token"`` (every explained token replaced by ``baseline_token``: unk, else
            pad, else eos), ``"zero"`` (zero embeddings) or a text with as many tokens as the
            prompt (e.g. the prompt with the names swapped).
        quadrature: the rule of the non-adaptive mode (``refine=False``): ``"gausslegendre"``
            or ``"riemann_trapezoid"`` / ``_middle`` / ``_left`` / ``_right``.
        n_steps: nodes (default 50 without refinement; 33 uniform points to start the
            refinement, each a forward + backward giving f and the gradient).
        refine: split path panels whose quadrature disagrees with the exact change of f
            until the completeness error is below ``tol`` (default) or ``max_evals``
            gradient evaluations are spent.
        batch_size: path points per batched forward/backward.

    Returns:
        :class:`Attribution`; ``a.completeness_error`` is
        ``|sum(scores) - (f(x) - f(b))| / |f(x) - f(b)|`` (max over rows); ``diagnostics``
        has ``converged``, ``panels``, ``path_error`` and the passes.

    Example:
        >>> a = il.attribute(lm, "When Mary and John went to the store, John gave a drink to",  # doctest: +SKIP
        ...                  il.NextToken(" Mary"), method="integrated_gradients")
        >>> a.completeness_error < 0.01  # doctest: +SKIP
        True
    """
    ex = Explained.build(lm, inputs, target, granularity=granularity, spans=spans, batch_size=batch_size,
                         baseline_token=baseline_token, chat=chat)
    x = ex.embeddings()
    b, baseline_label = _baseline_embeddings(ex, baseline)
    diff = (x - b).float()

    def points(alphas: np.ndarray) -> torch.Tensor:
        a = torch.as_tensor(alphas, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return b.unsqueeze(0) + a * (x - b).unsqueeze(0)

    nonfinite = [0]

    def point_fn(alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vals, contrib = [], []
        for s in range(0, len(alphas), batch_size):
            v, g = ex.gradients(points(alphas[s:s + batch_size]))  # [m, R], [m, R, pos, d]
            vals.append(v)
            c = ex.feature_sums((g.float() * diff).sum(-1))
            bad = ~np.isfinite(c)
            if bad.any():
                # e.g. the zero-embedding baseline itself, where RMSNorm's gradient is NaN:
                # count it, leave it out; the panel check then shows what is missing.
                nonfinite[0] += int(bad.any(axis=(1, 2)).sum())
                c = np.where(bad, 0.0, c)
            contrib.append(c)
        return np.concatenate(vals, 0), np.concatenate(contrib, 0)

    @torch.no_grad()
    def value_fn(alphas: np.ndarray) -> np.ndarray:
        e = points(alphas)
        bt = ex.masked_batch(torch.ones(len(e), len(ex.features), dtype=torch.bool))
        ex.passes.forward_passes += 1
        ex.passes.model_evaluations += len(e)
        return ex.row_values(lm.forward(bt, inputs_embeds=e.to(lm.dtype), grad=False)).double().cpu().numpy()

    if refine:
        if quadrature != "gausslegendre":
            raise IGError("refine=True uses adaptive Simpson panels; pass refine=False to choose a quadrature.")
        res = integrate_path(point_fn, n_steps=n_steps or 33, tol=tol, max_evals=max_evals,
                             split_batch=max(1, batch_size // 2))
        rule = "adaptive simpson"
    else:
        res = fixed_path(lambda a: point_fn(a)[1], value_fn, quadrature, n_steps or 50)
        rule = quadrature
    delta = res.f1 - res.f0
    err = res.completeness_error
    diag: dict[str, Any] = {"completeness_error": err, "baseline": baseline_label, "quadrature": rule,
                            "refine": refine, "n_steps": int(res.gradient_evaluations), "panels": len(res.panels) or 1,
                            "converged": bool(err <= tol) if not refine else res.converged, "tol": tol,
                            "path_error": res.path_error, "delta": delta.tolist(),
                            "nonfinite_gradient_points": nonfinite[0]}
    if err > tol:
        msg = (f"Integrated Gradients: the scores add up to {res.scores.sum(-1).tolist()} but f(x) - f(baseline) = "
               f"{delta.tolist()} (completeness error {err:.1%} > {tol:.0%}). ")
        msg += (f"The refinement budget max_evals={max_evals} was spent; raise it." if refine else
                "Uniform steps miss sharp jumps of f along the path: use refine=True (the default).")
        warnings.warn(msg, CompletenessWarning, stacklevel=2)
    return ex.result("integrated_gradients", res.scores, target_value=res.f1, baseline_value=res.f0,
                     diagnostics=diag,
                     options={"baseline": baseline, "quadrature": quadrature, "n_steps": n_steps, "refine": refine,
                              "tol": tol, "max_evals": max_evals, "granularity": granularity,
                              "batch_size": batch_size, "baseline_token": baseline_token})
