"""The :class:`Attribution` result shared by every attribution method (gradients, SHAP, LRP...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..results import Result
from ..viz.html import target_text
from ..viz.figures import Figure, Table, TokenShading


@dataclass(kw_only=True)
class Attribution(Result):
    """Scores of input features for a target.

    Attributes:
        prompt: the explained text (``None`` for token ids).
        tokens: every input token of the explained row (specials included).
        special: ``[pos]`` whether each token is a special token.
        features: the explained features' display strings (tokens, words or spans).
        feature_tokens: for each feature, the token positions it covers.
        scores: ``[features]`` for a single target; ``[rows, features]`` for targets with
            one row per generated token (``Continuation``), NaN where a feature comes
            after the row's token.
        rows: one label per row of a 2-d ``scores`` (the generated tokens); empty for 1-d.
        target_value: f(x), the target's value on the input (per row for 2-d scores).
        baseline_value: f(baseline) where the method has one (IG, SHAP), else ``None``.
        granularity: ``"token"``, ``"word"`` or ``"span"``.
        masking: how perturbation methods removed a feature (e.g. ``"token:<|endoftext|>"``
            or ``"attention"``); ``None`` for gradient methods.
    """

    prompt: str | None = None
    tokens: list[str] = field(default_factory=list)
    special: list[bool] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    feature_tokens: list[list[int]] = field(default_factory=list)
    scores: Any = None
    rows: list[str] = field(default_factory=list)
    target_value: Any = None
    baseline_value: Any = None
    granularity: str = "token"
    masking: str | None = None

    # The fixed-rule IG has no panels to measure a path error on: NaN says "not measured".
    nan_marks: ClassVar[tuple[str, ...]] = ("diagnostics.path_error",)

    def may_be_nan(self, path: str) -> bool:
        """2-d scores are NaN where a feature comes after the row's token (documented above)."""
        return (path == "scores" and np.ndim(self.scores) == 2) or super().may_be_nan(path)

    # Headline checks live in diagnostics; these read them.
    @property
    def completeness_error(self) -> float | None:
        """``|sum(scores) - (f(x) - f(baseline))| / |f(x) - f(baseline)|`` (IG, SHAP efficiency)."""
        return self.diagnostics.get("completeness_error")

    @property
    def conservation_error(self) -> float | None:
        """``|sum(relevance) - target| / |target|`` (LRP)."""
        return self.diagnostics.get("conservation_error")

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` features with the largest scores (first row for 2-d scores)."""
        s = np.asarray(self.scores, dtype=float)
        s = s[0] if s.ndim == 2 else s
        order = np.argsort(-np.nan_to_num(s, nan=-np.inf))[:k]
        return [(self.features[i], float(s[i])) for i in order]

    def summary(self) -> str:
        t = self.target or {}
        parts = [f"model {self.model}", f"target {t.get('kind', '')} {t.get('token', t.get('text', ''))}".strip()]
        for key in ("completeness_error", "conservation_error"):
            if self.diagnostics.get(key) is not None:
                parts.append(f"{key.replace('_', ' ')} {self.diagnostics[key]:.2%}")
        return " · ".join(parts)

    def unit(self) -> str:
        """What a score measures: a share of the target (most methods) or a gradient size (saliency)."""
        what = target_text(self.target) or "the target"
        if self.method == "saliency":
            return f"|gradient of {what} w.r.t. the token embedding|"
        return f"contribution to {what}"

    def figures(self) -> dict[str, Figure]:
        """``{"scores": TokenShading}`` (1-d scores), or a :class:`Table` of one shading per generated token."""
        s = np.asarray(self.scores, dtype=float)
        scale = float(np.nanmax(np.abs(s))) if s.size and np.isfinite(s).any() else 1.0
        if s.ndim == 1:
            return {"scores": TokenShading(self.features, s.tolist(), scale=scale, label=self.method, unit=self.unit())}
        rows = []
        for label, row in zip(self.rows, s):
            keep = [i for i, v in enumerate(row) if np.isfinite(v)]
            rows.append([label, TokenShading([self.features[i] for i in keep], [float(row[i]) for i in keep],
                                             scale=scale, label=self.method, unit=self.unit())])
        return {"scores": Table(["generated token", "attribution to the tokens before it"], rows)}
