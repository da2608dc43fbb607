"""Do two models explain alike? Rank agreement of attributions (teacher vs student), and of a
surrogate's local explanations vs the LM's KernelSHAP on the same words.

Attributions are computed through the registry (``registry.call``), so any registered
attribution method works (``"integrated_gradients"``, ``"kernel_shap"``...).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..progress import track
from ..registry import call
from ..results import Result
from ..stats import spearman
from ..targets import Label, NextToken
from ..viz.figures import Figure, Table, TokenShading
from .errors import DistillationError
from .features import words
from .teacher import fill


@dataclass(kw_only=True)
class ExplanationAgreement(Result):
    """Per text, two explanations of the same features and their Spearman rank correlation.

    Attributes:
        sides: the names of the two explanations (``["teacher", "student"]``...).
        texts: the explained texts; ``features``: per text, the feature labels.
        scores_a, scores_b: per text, each side's score per feature.
        spearman: per text, the rank correlation (NaN where a side is constant: "does not apply").
    """

    sides: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    features: list[list[str]] = field(default_factory=list)
    scores_a: list[list[float]] = field(default_factory=list)
    scores_b: list[list[float]] = field(default_factory=list)
    spearman: list[float] = field(default_factory=list)

    nan_marks = ("spearman", "diagnostics.mean_spearman")

    @property
    def mean(self) -> float:
        """Mean Spearman over the texts where it is defined."""
        v = [s for s in self.spearman if s == s]
        return float(np.mean(v)) if v else float("nan")

    def summary(self) -> str:
        return f"{self.sides[0]} vs {self.sides[1]}: mean Spearman {self.mean:.3f} over {len(self.texts)} texts"

    def figures(self) -> dict[str, Figure]:
        """``"agreement"``: per text, both explanations shaded and their rank correlation."""
        rows = []
        for f, a, b, r in zip(self.features, self.scores_a, self.scores_b, self.spearman):
            rows.append([TokenShading(f, a, label=self.sides[0]), TokenShading(f, b, label=self.sides[1]), r])
        return {"agreement": Table([self.sides[0], self.sides[1], "Spearman"], rows,
                                   title=f"Rank agreement (mean Spearman {self.mean:.3f})")}


def compare_explanations(lm_a: Any, lm_b: Any, prompts: Sequence[str] | str, method: str = "integrated_gradients", *,
                         target: Any = None, names: tuple[str, str] = ("teacher", "student"),
                         **options: Any) -> ExplanationAgreement:
    """Spearman rank agreement of two models' attributions of the same prompts (teacher vs student).

    Both models must share a tokenizer (a student does), so the features are the same
    tokens. The target defaults to each prompt's top next token *of the first model*,
    explained in both.

    Args:
        lm_a, lm_b: the two models.
        prompts: a prompt or a list.
        method: a registered attribution method (``"integrated_gradients"``, ``"kernel_shap"``...).
        target: what to explain (default: ``lm_a``'s top-1 next token per prompt).
        options: the method's options (``n_samples=``...).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> r = il.compare_explanations(lm, lm, ["The cat sat on the"], method="saliency")
        >>> round(r.mean, 6)
        1.0
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise DistillationError("compare_explanations needs at least one prompt.")
    if lm_a.vocab_size != lm_b.vocab_size:
        raise DistillationError(f"The models' vocabularies differ ({lm_a.vocab_size} vs {lm_b.vocab_size} ids): "
                                "attributions of the same tokens need a shared tokenizer.")
    out = ExplanationAgreement(model=f"{lm_a.name} / {lm_b.name}", method=f"compare_explanations:{method}",
                               sides=list(names))
    for p in track(prompts, f"compare_explanations ({method})"):
        tgt = target
        if tgt is None:
            top = lm_a.forward(p, grad=False)
            from ..targets import prediction_positions
            pos = int(prediction_positions(lm_a, top.batch)[0])
            tgt = NextToken(int(top.logits[0, pos].argmax()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = call(method, lm_a, p, tgt, **options)
            b = call(method, lm_b, p, tgt, **options)
        sa, sb = np.asarray(a.scores, dtype=float).ravel(), np.asarray(b.scores, dtype=float).ravel()
        out.texts.append(p)
        out.features.append(list(a.features))
        out.scores_a.append(sa.tolist())
        out.scores_b.append(sb.tolist())
        out.spearman.append(spearman(sa, sb))
    out.diagnostics["mean_spearman"] = out.mean
    return out


def surrogate_vs_shap(lm: Any, sur: Any, texts: Sequence[str], *, n_samples: int = 256, seed: int = 0,
                      batch_size: int = 32) -> ExplanationAgreement:
    """Spearman agreement of a surrogate's word contributions with the LM's KernelSHAP of the same words.

    The LM reads ``sur.template`` around each text; KernelSHAP (through the registry) explains
    ``log p(classes[-1])`` of the core's ``Label`` target over the text's words only (the
    template stays fixed); the surrogate's contributions are taken toward the same class.

    Example:
        >>> agree = surrogate_vs_shap(lm, sur, texts[:10])  # doctest: +SKIP
        >>> agree.mean  # doctest: +SKIP
    """
    cls = sur.classes[-1]
    target = Label(dict(sur.verbalizers), label=cls)
    out = ExplanationAgreement(model=lm.name, method="surrogate_vs_shap", sides=[f"surrogate ({sur.into})",
                                                                                  "LM KernelSHAP"])
    for text in track(list(texts), "surrogate vs KernelSHAP"):
        prompt = fill(lm, sur.template, text)
        at = prompt.find(text)
        ws = words(text)
        if at < 0 or len(ws) < 2:
            continue
        e = sur.explain(text)
        sign = 1.0 if e.prediction == cls or len(sur.classes) != 2 else -1.0
        mine = [sign * v for _, v in e.words]
        spans = [(at + a, at + b) for _, a, b in ws]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                shap = call("kernel_shap", lm, prompt, target, n_samples=n_samples, seed=seed, spans=spans,
                            batch_size=batch_size)
        except Exception as exc:  # a word that shares a token with its neighbour cannot be a feature alone
            if type(exc).__name__ != "FeatureError":
                raise
            continue
        theirs = np.asarray(shap.scores, dtype=float).ravel()
        out.texts.append(text)
        out.features.append([w for w, _, _ in ws])
        out.scores_a.append(mine)
        out.scores_b.append(theirs.tolist())
        out.spearman.append(spearman(mine, theirs))
    out.diagnostics["mean_spearman"] = out.mean
    return out
