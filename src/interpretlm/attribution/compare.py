"""``il.compare``: several attribution methods side by side, with faithfulness, cost and agreement."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InterpretLMError
from ..model import LM
from ..progress import track
from ..registry import CheckSpec, register
from ..results import Result
from ..targets import TargetLike
from ..viz.html import target_text
from ..viz.figures import Figure, Table, TokenShading
from .faithfulness import faithfulness, rank_correlation

DEFAULT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "occlusion", "lime", "kernel_shap")


@dataclass(kw_only=True)
class Comparison(Result):
    """Attributions of one input by several methods.

    Attributes:
        features: the shared features.
        methods: the methods, in order.
        scores: ``[methods, features]`` (first row of each method for a ``Continuation``).
        table: per method: seconds, passes, completeness error, faithfulness scores.
        agreement: ``[methods, methods]`` Spearman rank correlation of the scores.
        full_scores: each method's whole ``scores`` (``[rows, features]`` for a continuation).

    ``comparison.attributions`` (in memory only) holds each method's :class:`Attribution`.
    """

    features: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    scores: Any = None
    table: list[dict[str, Any]] = field(default_factory=list)
    agreement: Any = None
    full_scores: list[Any] = field(default_factory=list)

    def summary(self) -> str:
        return f"model {self.model} · {len(self.methods)} methods · target {self.target}"

    def figures(self) -> dict[str, Figure]:
        """``"attributions"`` (a shading per method, each scaled to its own maximum), ``"cost"``
        (cost and faithfulness per method) and ``"agreement"`` (Spearman rank agreement)."""
        s = np.asarray(self.scores, dtype=float)
        rows = []
        for m, row in zip(self.methods, s):
            scale = float(np.nanmax(np.abs(row))) if np.isfinite(row).any() else 1.0
            rows.append([m, TokenShading(self.features, row.tolist(), scale=scale, label=m,
                                         unit=f"contribution to {target_text(self.target) or 'the target'}")])
        keys = [k for k in ("seconds", "forward_passes", "backward_passes", "model_evaluations", "completeness_error",
                            "deletion_aopc", "insertion_aopc", "comprehensiveness", "sufficiency",
                            "random_deletion_aopc") if any(k in r for r in self.table)]
        agr = np.asarray(self.agreement, dtype=float)
        return {
            "attributions": Table(["method", "features"], rows,
                                  title="Attributions (each row scaled to its own maximum)"),
            "cost": Table(["method"] + keys, [[r["method"]] + [r.get(k) for k in keys] for r in self.table],
                          title="Cost and faithfulness"),
            "agreement": Table([""] + self.methods, [[m] + [float(v) for v in agr[i]]
                                                     for i, m in enumerate(self.methods)],
                               title="Rank agreement (Spearman)"),
        }


def _worst_completeness(c: Comparison) -> float | None:
    errors = [row["completeness_error"] for row in c.table if row.get("completeness_error") is not None]
    return max(errors) if errors else None


@register("compare", family="feature attribution", takes="prompt", result=Comparison,
          check=CheckSpec("max_completeness_error", 0.01, read=_worst_completeness,
                          advice="a method with a completeness axiom (IG, SHAP) did not meet it; see the table."),
          summary="several attribution methods side by side, with faithfulness and agreement",
          demo="interpretlm.attribution.demo_section:attribution_section", demo_order=30)
def compare(lm: LM, inputs: Any, target: TargetLike, methods: Sequence[str] = DEFAULT_METHODS, *,
            options: dict[str, dict[str, Any]] | None = None, with_faithfulness: bool = True,
            granularity: str = "token", batch_size: int = 16, seed: int = 0) -> Comparison:
    """Run ``methods`` on one input and put them side by side.

    Args:
        methods: registered method names.
        options: per-method options, e.g. ``{"kernel_shap": {"n_samples": 512}}``.
        with_faithfulness: add deletion/insertion AOPC, comprehensiveness and sufficiency.
        seed: passed to stochastic methods (``lime``, ``kernel_shap``) unless ``options`` say otherwise.

    Returns:
        :class:`Comparison` with ``scores [methods, features]``, a table of cost and faithfulness
        and the methods' rank agreement.

    Example:
        >>> t = il.compare(lm, "When Mary and John went to the store, John gave a drink to",  # doctest: +SKIP
        ...                il.NextToken(" Mary"), methods=["saliency", "integrated_gradients", "kernel_shap"])
        >>> t.save_html("compare.html")  # doctest: +SKIP
    """
    if not methods:
        raise InterpretLMError("compare needs at least one method, e.g. methods=['saliency', 'kernel_shap'].")
    options = options or {}
    atts, table = [], []
    for m in track(methods, "compare"):
        opts: dict[str, Any] = {"granularity": granularity, "batch_size": batch_size}
        if m in ("lime", "kernel_shap"):
            opts["seed"] = seed
        opts.update(options.get(m, {}))
        from . import attribute
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = attribute(lm, inputs, target, method=m, **opts)
        row: dict[str, Any] = {"method": m, "seconds": round(time.perf_counter() - t0, 3)}
        for k in ("forward_passes", "backward_passes", "model_evaluations"):
            row[k] = int(a.diagnostics.get(k, 0))
        row["completeness_error"] = a.completeness_error
        if caught:
            row["warning"] = str(caught[0].message)
        if with_faithfulness:
            row.update({k: v for k, v in faithfulness(lm, a, target=target, batch_size=max(batch_size, 32)).scores.items()
                        if not k.endswith("_norm")})
        atts.append(a)
        table.append(row)
    first = [np.asarray(a.scores, dtype=float) for a in atts]
    flat = [s.ravel() for s in first]
    agreement = np.array([[rank_correlation(x, y) for y in flat] for x in flat])
    head = np.stack([s[0] if s.ndim == 2 else s for s in first])
    a0 = atts[0]
    out = Comparison(model=lm.name, method="compare", target=a0.target, policy=dict(a0.policy),
                     diagnostics={"model_evaluations": int(sum(r["model_evaluations"] for r in table))},
                     features=list(a0.features), methods=list(methods), scores=head, table=table,
                     agreement=agreement, full_scores=first)
    out.attributions = atts
    return out
