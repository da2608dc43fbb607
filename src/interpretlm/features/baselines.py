"""Features beside their baselines (AxBench): concept detection and steering on the same concept set.

For a concept given as positive and negative texts, :func:`compare_to_baselines` splits them
(stratified, seeded) and, on the dictionary's component:

* **detection** (AUROC on the held-out texts): the best single dictionary feature (chosen on the
  training texts by AUROC of its max over tokens), the difference-in-means direction (mean
  activation over tokens, positive minus negative class means) and a logistic-regression probe
  (scikit-learn, L2, on the same mean activations);
* **steering**: each method's direction (the feature's decoder row, the difference of means, the
  probe's weights), scaled to norm 1, added at the same strengths through :func:`steer`:
  concept rate (concept words: given, or the ten tokens most over-represented in the positive texts)
  against perplexity.

The published finding (AxBench, ICML 2025) is that the two baselines beat SAE features at both;
this reports the numbers on the model and dictionary at hand.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..results import Result
from ..units import Unit
from ..viz.figures import Figure, LineChart, Table
from .dictionary import Dictionary, read_mlp_input
from .errors import FeatureError
from .steering import DEFAULT_PROMPTS, steer

METHODS = ("sae_feature", "diff_in_means", "linear_probe")


@dataclass(kw_only=True)
class ConceptComparison(Result):
    """A dictionary's best feature for a concept beside difference-in-means and a linear probe.

    Attributes:
        component: where all three read and steer; dictionary: its name.
        best_feature: the feature chosen on the training texts.
        n_train, n_test: texts in each split.
        detection: ``{method: AUROC}`` on the held-out texts (``METHODS``).
        strengths: the steering strengths; concept: the concept words counted.
        steering: ``{method: {"concept_rate": [s], "perplexity": [s]}}``.
    """

    component: str = ""
    dictionary: str = ""
    best_feature: int = -1
    n_train: int = 0
    n_test: int = 0
    detection: dict[str, float] = field(default_factory=dict)
    strengths: list[float] = field(default_factory=list)
    concept: list[str] = field(default_factory=list)
    steering: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def summary(self) -> str:
        det = ", ".join(f"{m} {v:.3f}" for m, v in self.detection.items())
        return f"detection AUROC: {det}"

    def figures(self) -> dict[str, Figure]:
        figs: dict[str, Figure] = {"detection": Table(["method", "AUROC (held out)"],
                                                      [[m, v] for m, v in self.detection.items()])}
        if self.steering:
            xs = [f"{s:g}" for s in self.strengths]
            figs["steering"] = LineChart(x=xs, series={m: v["concept_rate"] for m, v in self.steering.items()},
                                         x_label="strength", y_label="concept rate", y_min=0.0,
                                         title="Steering: concept rate")
            figs["fluency"] = LineChart(x=xs, series={m: v["perplexity"] for m, v in self.steering.items()},
                                        x_label="strength", y_label="perplexity", title="Steering: fluency")
        return figs


def _pooled(lm: Any, sae: Dictionary, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per text: the component's mean over tokens ``[n, d_in]`` and each feature's max ``[n, n_features]``
    (the first token, an attention sink, left out when the text has more than one)."""
    means, maxes = [], []
    for t in texts:
        got: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            if sae.is_transcoder:
                with read_mlp_input(lm, sae.layer, lambda v: got.__setitem__("x", v)):
                    lm.forward(t)
                x = got["x"][0]
            else:
                with lm.capture([sae.component]) as cache:
                    lm.forward(t)
                x = cache[sae.component][0]
        x = x.reshape(x.shape[0], -1).float().cpu()
        x = x[1:] if x.shape[0] > 1 else x
        means.append(x.mean(0))
        maxes.append(sae.encode(x).amax(0))
    return torch.stack(means), torch.stack(maxes)


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(labels, scores))


def concept_words(lm: Any, positive: list[str], negative: list[str], n: int = 10) -> list[str]:
    """The ``n`` tokens most over-represented in ``positive`` against ``negative`` (add-one smoothed ratio).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> concept_words(tiny_lm("llama"), ["the cat", "a cat"], ["the dog", "a dog"], n=1)
        [' cat']
    """
    def counts(texts: list[str]) -> Counter:
        c: Counter = Counter()
        for t in texts:
            c.update(lm.tokenizer(t, add_special_tokens=False)["input_ids"])
        return c
    pos, neg = counts(positive), counts(negative)
    ranked = sorted(pos, key=lambda i: (-(pos[i] + 1) / (neg[i] + 1), i))
    return [lm.tokenizer.decode([i]) for i in ranked[:n]]


def compare_to_baselines(lm: Any, dictionary: Dictionary, positive: list[str], negative: list[str], *,
                         concept: list[str] | None = None, strengths: list[float] | None = (0.0, 4.0, 8.0, 16.0),
                         prompts: list[str] = DEFAULT_PROMPTS, max_new_tokens: int = 12, test_fraction: float = 0.5,
                         seed: int = 0) -> ConceptComparison:
    """Detect and steer a concept with the dictionary's best feature, difference-in-means and a linear probe.

    Args:
        lm: the model handle; dictionary: a :class:`Dictionary` matching it.
        positive, negative: texts with and without the concept (at least 4 of each).
        concept: the words counted when steering (default: :func:`concept_words`).
        strengths: norms added along each direction (``None``: detection only).
        prompts, max_new_tokens: generation for steering; test_fraction, seed: the split.

    Returns:
        :class:`ConceptComparison` (detection AUROCs, steering curves).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> sae = Dictionary.random(lm.d_model, 64, component="blocks.0.resid_post", k=4)
        >>> pos = [f"the cat {i}" for i in range(6)]; neg = [f"the dog {i}" for i in range(6)]
        >>> r = compare_to_baselines(lm, sae, pos, neg, strengths=None)
        >>> sorted(r.detection) == sorted(METHODS)
        True
    """
    from sklearn.linear_model import LogisticRegression

    dictionary.check_model(lm)
    positive, negative = list(positive), list(negative)
    if min(len(positive), len(negative)) < 4:
        raise FeatureError("compare_to_baselines needs at least 4 positive and 4 negative texts.")
    if not 0 < test_fraction < 1:
        raise FeatureError(f"test_fraction must be in (0, 1); got {test_fraction}.")
    texts = positive + negative
    labels = np.array([1] * len(positive) + [0] * len(negative))
    rng = np.random.default_rng(seed)
    test = np.zeros(len(texts), dtype=bool)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        test[idx[: max(2, int(round(len(idx) * test_fraction)))]] = True
    means, maxes = _pooled(lm, dictionary, texts)
    X, F = means.numpy(), maxes.numpy()
    tr, te = ~test, test
    # the best single feature, chosen on the training texts only
    train_auc = np.array([_auroc(F[tr, j], labels[tr]) if F[tr, j].std() > 0 else 0.5 for j in range(F.shape[1])])
    best = int(np.argmax(train_auc))
    diff = X[tr][labels[tr] == 1].mean(0) - X[tr][labels[tr] == 0].mean(0)
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(X[tr], labels[tr])
    detection = {"sae_feature": _auroc(F[te, best], labels[te]), "diff_in_means": _auroc(X[te] @ diff, labels[te]),
                 "linear_probe": _auroc(probe.decision_function(X[te]), labels[te])}
    words = list(concept) if concept else concept_words(lm, positive, negative)
    result = ConceptComparison(component=dictionary.component, dictionary=dictionary.name, best_feature=best,
                               n_train=int(tr.sum()), n_test=int(te.sum()), detection=detection, concept=words)
    if strengths is not None and not dictionary.is_transcoder:
        result.strengths = [float(s) for s in strengths]
        directions = {"sae_feature": dictionary.direction(best), "diff_in_means": torch.tensor(diff),
                      "linear_probe": torch.tensor(probe.coef_[0])}
        for name, v in directions.items():
            sweep = steer(lm, Unit(dictionary.component, direction=v.float()), strengths=result.strengths,
                          prompts=list(prompts), concept=words, max_new_tokens=max_new_tokens, seed=seed,
                          progress=False)
            result.steering[name] = {"concept_rate": sweep.concept_rate, "perplexity": sweep.perplexity}
    result.diagnostics = {"train_auroc_best_feature": float(train_auc[best])}
    return result


__all__ = ["ConceptComparison", "METHODS", "compare_to_baselines", "concept_words"]
