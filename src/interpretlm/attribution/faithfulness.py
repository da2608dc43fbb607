"""Is an attribution faithful? Deletion / insertion curves (AOPC), ERASER comprehensiveness and
sufficiency, and the model-randomization sanity check (Adebayo et al. 2018).

``il.faithfulness(lm, a)`` removes the features of ``a`` in the order of their scores
(highest first) with the masking recorded in ``a`` and scores every step in batches.
Higher is better for every number except ``sufficiency`` (how much is lost keeping only
the top features: lower is better) and the sanity check's rank correlation (an
attribution that does not change when the weights are randomized explains nothing).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import CheckWarning, InterpretLMError
from ..model import LM
from ..registry import CheckSpec, register
from ..results import Result
from ..targets import Target, TargetLike
from ..viz.figures import Figure, LineChart, Table
from ..viz.html import target_text
from .explained import Explained
from .features import Features
from .result import Attribution

BINS = (0.01, 0.05, 0.1, 0.2, 0.5)


class FaithfulnessError(InterpretLMError, ValueError):
    """An attribution that cannot be checked (unknown target, no features)."""


class SanityWarning(CheckWarning):
    """Attributions that barely change when the model's weights are randomized."""


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors (ties get their mean rank; NaNs dropped).

    Example:
        >>> rank_correlation(np.array([1.0, 2, 3]), np.array([10.0, 30, 20]))
        0.5
    """
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2:
        return float("nan")

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):
            tie = x == v
            if tie.sum() > 1:
                r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def target_from_dict(d: dict[str, Any] | None) -> Target:
    """Rebuild the target recorded in a result (any kind :meth:`Target.from_dict` knows)."""
    if not d:
        raise FaithfulnessError("The attribution records no target; pass target=... explicitly.")
    return Target.from_dict(d)


def explained_from(lm: LM, a: Attribution, target: TargetLike | None = None, batch_size: int = 32) -> Explained:
    """The :class:`Explained` input of an attribution, with its own features and masking."""
    if not a.input_ids:
        raise FaithfulnessError("This attribution has no input_ids; it was not made by il.attribute.")
    masking, token = "token", None
    if a.masking == "attention":
        masking = "attention"
    elif a.masking and a.masking.startswith("token:"):
        token = lm.tokenizer.convert_tokens_to_ids(a.masking[len("token:"):])
    ex = Explained.build(lm, a.input_ids, target if target is not None else target_from_dict(a.target),
                         masking=masking, baseline_token=token, batch_size=batch_size)
    ex.features = Features(list(a.features), [list(p) for p in a.feature_tokens], a.granularity)
    return ex


@dataclass(kw_only=True)
class FaithfulnessScores(Result):
    """Faithfulness of one attribution.

    Attributes:
        deletion: ``[rows, F + 1]`` f after removing the top-k features, k = 0..F.
        insertion: ``[rows, F + 1]`` f with only the top-k features present.
        random_deletion / random_insertion: the same curves for a random order (reference).
        scores: ``{name: value}`` — ``deletion_aopc``, ``insertion_aopc`` (mean over k of
            the change, in target units; ``*_norm`` divided by ``f(x) - f(none)``),
            ``random_deletion_aopc``, ``random_insertion_aopc``, ``comprehensiveness``,
            ``sufficiency`` and, when run, ``randomization_spearman``.
        randomization: the sanity check per stage: ``{"stage", "spearman", "abs_spearman"}``.
    """

    features: list[str] = field(default_factory=list)
    deletion: Any = None
    insertion: Any = None
    random_deletion: Any = None
    random_insertion: Any = None
    scores: dict[str, float] = field(default_factory=dict)
    randomization: list[dict[str, Any]] = field(default_factory=list)

    # Curves are NaN past a row's visible features; the normalised AOPC is NaN when f(x) = f(none).
    nan_marks: ClassVar[tuple[str, ...]] = ("deletion", "insertion", "random_deletion", "random_insertion",
                                            "scores.deletion_aopc_norm", "scores.insertion_aopc_norm",
                                            "randomization")

    def summary(self) -> str:
        s = self.scores
        return (f"{self.method}: deletion AOPC {s.get('deletion_aopc', float('nan')):.3f} "
                f"(random {s.get('random_deletion_aopc', float('nan')):.3f}), insertion AOPC "
                f"{s.get('insertion_aopc', float('nan')):.3f}, comprehensiveness {s.get('comprehensiveness', float('nan')):.3f}, "
                f"sufficiency {s.get('sufficiency', float('nan')):.3f}")

    def figures(self) -> dict[str, Figure]:
        """``"scores"`` (a table), ``"curves"`` (f after removing / keeping the top-k features, mean
        over rows, k = 0..F, drawn and tabled) and ``"randomization"`` when the check was run."""
        figs: dict[str, Figure] = {"scores": Table(["score", "value"], [(k, float(v)) for k, v in self.scores.items()])}
        curves = {}
        for name in ("deletion", "insertion", "random_deletion", "random_insertion"):
            c = np.asarray(getattr(self, name), dtype=float)
            if c.size:
                curves[name] = c.mean(0).tolist()
        if curves:
            n = len(next(iter(curves.values())))
            figs["curves"] = LineChart([str(k) for k in range(n)], {k.replace("_", " "): v for k, v in curves.items()},
                                       x_label="k (features removed or kept)", y_label="f",
                                       unit=target_text(self.target) or "the explained output",
                                       title="Curves (f after k features, k = 0..F)")
            figs["curve_values"] = Table(["curve", "values"], [(k, " ".join(f"{v:.3g}" for v in c))
                                                               for k, c in curves.items()])
        if self.randomization:
            figs["randomization"] = Table(["stage", "Spearman", "Spearman of |scores|"],
                                          [(r["stage"], r["spearman"], r["abs_spearman"]) for r in self.randomization],
                                          title="Model-randomization check")
        return figs


def _orders(scores: np.ndarray, visible: np.ndarray, rng: np.random.Generator) -> tuple[list, list]:
    top, rand = [], []
    for r in range(scores.shape[0]):
        cols = np.flatnonzero(visible[r])
        top.append(cols[np.argsort(-scores[r, cols], kind="mergesort")])
        rand.append(rng.permutation(cols))
    return top, rand


def _curves(ex: Explained, orders: list[np.ndarray], F: int) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves ``[rows, n + 1]`` for one order per row (one batched sweep)."""
    masks, index = [], []
    for r, order in enumerate(orders):
        for k in range(len(order) + 1):
            dele = np.ones(F, bool)
            dele[order[:k]] = False
            ins = np.zeros(F, bool)
            ins[order[:k]] = True
            masks += [dele, ins]
            index.append((r, k))
    vals = ex.values(np.array(masks), "faithfulness")
    n = max(len(o) for o in orders)
    dcurve = np.full((len(orders), n + 1), np.nan)
    icurve = np.full((len(orders), n + 1), np.nan)
    for j, (r, k) in enumerate(index):
        dcurve[r, k] = vals[2 * j, r]
        icurve[r, k] = vals[2 * j + 1, r]
    return dcurve, icurve


def _nanmean(x: np.ndarray) -> float:
    """``np.nanmean`` that is NaN, without numpy's warning, when every value is NaN."""
    return float(np.nanmean(x)) if np.isfinite(x).any() or not np.isnan(x).all() else float("nan")


def _aopc(curve: np.ndarray, deletion: bool) -> np.ndarray:
    """Mean over k >= 1 of the drop from the full input (deletion) or the gain over none (insertion)."""
    ref = curve[:, :1]
    diff = (ref - curve[:, 1:]) if deletion else (curve[:, 1:] - ref)
    with warnings.catch_warnings():  # an all-NaN row (NaN injected into the model) gives NaN, reported by the
        warnings.simplefilter("ignore", RuntimeWarning)  # registry's non-finite scan, not numpy's warning
        return np.nanmean(diff, axis=1)


@register("faithfulness", family="feature attribution", takes="result", result=FaithfulnessScores,
          target="optional", summary="deletion / insertion AOPC, comprehensiveness, sufficiency, randomization",
          check=CheckSpec("deletion_aopc_vs_random", 0.0, higher_is_better=True,
                          read=lambda r: r.scores["deletion_aopc"] - r.scores["random_deletion_aopc"],
                          advice="removing the top-ranked features first hurts the target no more than a random order."))
def faithfulness(lm: LM, a: Attribution, *, target: TargetLike | None = None, bins: tuple[float, ...] = BINS,
                 randomization: bool = False, stages: tuple[float, ...] = (0.25, 0.5, 1.0), seed: int = 0,
                 batch_size: int = 32) -> FaithfulnessScores:
    """Faithfulness scores of an attribution.

    Args:
        a: an :class:`Attribution` from ``il.attribute``.
        target: the explained target (default: rebuilt from ``a.target``).
        bins: fractions of features for comprehensiveness / sufficiency (ERASER uses
            1, 5, 10, 20, 50 %; at least one feature each).
        randomization: also run the model-randomization sanity check: the weights of the
            top ``stage`` fraction of the layers are re-drawn (cascading from the top; 1.0
            re-draws the embeddings too) and the method is rerun with ``a.options``.
        seed: for the random reference order and the randomized weights.

    Returns:
        :class:`FaithfulnessScores` (curves ``[rows, F + 1]``, ``scores`` dict; passes in ``diagnostics``).

    Example:
        >>> a = il.attribute(lm, prompt, il.NextToken(" Mary"), method="input_x_gradient")  # doctest: +SKIP
        >>> il.faithfulness(lm, a).scores["deletion_aopc"]  # doctest: +SKIP
    """
    if not isinstance(a, Attribution):
        raise FaithfulnessError(f"faithfulness needs an Attribution from il.attribute; got {type(a).__name__}.")
    ex = explained_from(lm, a, target, batch_size)
    S = np.asarray(a.scores, dtype=float)
    S2 = S[None] if S.ndim == 1 else S
    visible = ex.visible() & np.isfinite(S2)
    F = len(ex.features)
    rng = np.random.default_rng(seed)
    top, rand = _orders(np.nan_to_num(S2), visible, rng)
    dcurve, icurve = _curves(ex, top, F)
    rd, ri = _curves(ex, rand, F)
    full, none = dcurve[:, 0], icurve[:, 0]
    span = np.where(np.abs(full - none) > 1e-12, full - none, np.nan)
    comp, suff = [], []
    for q in bins:
        comp_q, suff_q = [], []
        for r, order in enumerate(top):
            k = min(len(order), max(1, int(round(q * len(order)))))
            comp_q.append(full[r] - dcurve[r, k])
            suff_q.append(full[r] - icurve[r, k])
        comp.append(np.mean(comp_q))
        suff.append(np.mean(suff_q))
    scores = {
        "deletion_aopc": float(np.mean(_aopc(dcurve, True))),
        "insertion_aopc": float(np.mean(_aopc(icurve, False))),
        "deletion_aopc_norm": _nanmean(_aopc(dcurve, True) / span),
        "insertion_aopc_norm": _nanmean(_aopc(icurve, False) / span),
        "random_deletion_aopc": float(np.mean(_aopc(rd, True))),
        "random_insertion_aopc": float(np.mean(_aopc(ri, False))),
        "comprehensiveness": float(np.mean(comp)),
        "sufficiency": float(np.mean(suff)),
    }
    diag: dict[str, Any] = dict(ex.passes.as_dict())
    checks: list[dict[str, Any]] = []
    if randomization:
        checks = randomization_check(lm, a, stages=stages, seed=seed, target=target)
        scores["randomization_spearman"] = checks[-1]["spearman"]
        diag["randomization_model_evaluations"] = int(sum(c["model_evaluations"] for c in checks))
        if abs(checks[-1]["spearman"]) > 0.5:
            msg = (f"{a.method}: rank correlation {checks[-1]['spearman']:.2f} with the attribution of a fully "
                   "randomized model; the attribution may not depend on what the model learned.")
            warnings.warn(msg, SanityWarning, stacklevel=2)
    return FaithfulnessScores(model=lm.name, method=a.method, target=a.target, policy=dict(a.policy),
                              diagnostics=diag, features=list(a.features), deletion=dcurve, insertion=icurve,
                              random_deletion=rd, random_insertion=ri, scores=scores, randomization=checks)


def _randomize(model: torch.nn.Module, lm: LM, fraction: float, gen: torch.Generator) -> None:
    """Re-draw (in place) the weights of the top ``fraction`` of the blocks; 1.0 also the embeddings."""
    from ..model import resolve_blocks

    blocks = resolve_blocks(model, lm.family)
    n = len(blocks)
    k = max(1, int(round(fraction * n)))
    modules = list(blocks[n - k:])
    if fraction >= 1.0:
        modules.append(model.get_input_embeddings())
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                if p.dim() >= 2:
                    std = float(p.std()) or 0.02
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


def randomization_check(lm: LM, a: Attribution, *, stages: tuple[float, ...] = (0.25, 0.5, 1.0), seed: int = 0,
                        target: TargetLike | None = None) -> list[dict[str, Any]]:
    """Cascading model randomization (Adebayo et al. 2018): rank correlation between ``a`` and the
    same method's attribution on copies of the model whose top layers are re-drawn.

    Returns one ``{"stage", "spearman", "abs_spearman", "model_evaluations"}`` per stage.
    """
    from . import attribute

    base = np.asarray(a.scores, dtype=float)
    tgt = target if target is not None else target_from_dict(a.target)
    model = copy.deepcopy(lm.model)
    gen = torch.Generator().manual_seed(seed)
    out = []
    done = 0.0
    for frac in sorted(stages):
        if frac <= done:
            continue
        _randomize(model, lm, frac, gen)
        done = frac
        rlm = LM(model, lm.tokenizer, name=f"{lm.name} (top {frac:.0%} randomized)")
        opts = {k: v for k, v in a.options.items()}
        if a.granularity == "span":
            opts["spans"] = list(a.features)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = attribute(rlm, a.input_ids, tgt, method=a.method, **opts)
        rs = np.asarray(r.scores, dtype=float)
        out.append({"stage": f"top {frac:.0%} of layers" + (" + embeddings" if frac >= 1 else ""),
                    "spearman": rank_correlation(base, rs), "abs_spearman": rank_correlation(np.abs(base), np.abs(rs)),
                    "model_evaluations": int(r.diagnostics.get("model_evaluations", 0))})
    return out
