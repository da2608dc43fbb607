"""Result classes of distillation: :class:`Surrogate` (with :meth:`Surrogate.explain`) and :class:`Student`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results import Result
from ..viz.figures import Bars, Figure, Graph, LineChart, Table, Text, TokenShading
from . import surrogates as S
from .features import counts, term_positions, words

KIND_TITLES = {"sparse_linear": "sparse linear (L1 logistic regression)", "tree": "decision tree",
               "ebm": "explainable boosting machine (interpret)", "aug_linear": "Aug-Linear (LM n-gram embeddings)"}


@dataclass
class LocalExplanation:
    """One text explained by a surrogate: each term's contribution to the predicted class.

    Attributes:
        text: the text.
        prediction: the surrogate's class.
        probabilities: ``{class: probability}`` (softmax of the class scores; trees: leaf frequencies).
        base: the score before any term (intercept; trees: the root's class frequency).
        terms: ``[(term, contribution)]`` by decreasing |contribution|; ``base + sum`` is the
            surrogate's score of the predicted class (log-odds for binary linear models and EBMs).
        words: ``[(word, value)]``: each word's share of the contributions of the terms it is in.
        unit: what a contribution is.
    """

    text: str
    prediction: str
    probabilities: dict[str, float]
    base: float
    terms: list[tuple[str, float]]
    words: list[tuple[str, float]]
    unit: str

    def figure(self) -> TokenShading:
        """The text's words shaded by their contributions (a :class:`~interpretlm.viz.figures.TokenShading`)."""
        ws = words(self.text)
        tokens, values, last = [], [], 0
        for (w, a, b), (_, v) in zip(ws, self.words):
            if a > last:
                tokens.append(self.text[last:a])
                values.append(0.0)
            tokens.append(self.text[a:b])
            values.append(v)
            last = b
        if last < len(self.text):
            tokens.append(self.text[last:])
            values.append(0.0)
        return TokenShading(tokens, values, label="contribution", unit=self.unit,
                            title=f"prediction: {self.prediction}")

    def _repr_html_(self) -> str:
        from ..viz.render import render
        return render(self.figure())


@dataclass(kw_only=True)
class Surrogate(Result):
    """An interpretable model of the LM's predictions on a task (``il.distill(lm, task, into=...)``).

    Attributes:
        into: ``"sparse_linear"``, ``"tree"``, ``"ebm"`` or ``"aug_linear"``.
        classes: the task's classes (the LM's prediction is one of them).
        template: the prompt the LM read (``{text}``, and ``{mask}`` for encoders).
        verbalizers: ``{class: [tokens]}`` read through the core's ``Label`` target.
        ngram: the longest word n-gram of the features.
        terms: the n-grams the fitted model reads (lower-cased words).
        params: the fitted model as plain data (see :mod:`interpretlm.distillation.surrogates`).
        size: ``terms``; trees ``depth``, ``leaves``; EBMs ``main_effects``, ``interactions``.
        heldout: the held-out texts with their gold class, the LM's and the surrogate's.

    ``fidelity`` (agreement with the LM on held-out texts; with ``fit="score"``, R² of the
    LM's held-out log-odds), ``fidelity_perturbed`` (on their word-deleted versions),
    ``accuracy`` (against the gold labels), ``lm_accuracy`` and ``speedup`` (the LM's seconds
    per text over the surrogate's, measured in one process) are in ``diagnostics`` and read as
    attributes; a score surrogate adds ``r2``, ``label_agreement`` and, for a numeric task,
    ``gold_spearman`` and ``lm_gold_spearman``.
    """

    into: str = "sparse_linear"
    fit: str = "label"
    task: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    template: str = ""
    verbalizers: dict[str, list[str]] = field(default_factory=dict)
    ngram: int = 2
    terms: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)
    heldout: dict[str, list[Any]] = field(default_factory=dict)

    # ------------------------------------------------------------------ figures as attributes
    @property
    def fidelity(self) -> float:
        return float(self.diagnostics.get("fidelity", float("nan")))

    @property
    def fidelity_perturbed(self) -> float:
        return float(self.diagnostics.get("fidelity_perturbed", float("nan")))

    @property
    def accuracy(self) -> float:
        return float(self.diagnostics.get("accuracy", float("nan")))

    @property
    def lm_accuracy(self) -> float:
        return float(self.diagnostics.get("lm_accuracy", float("nan")))

    @property
    def r2(self) -> float:
        return float(self.diagnostics.get("r2", float("nan")))

    @property
    def label_agreement(self) -> float:
        return float(self.diagnostics.get("label_agreement", self.diagnostics.get("fidelity", float("nan"))))

    @property
    def gold_spearman(self) -> float:
        return float(self.diagnostics.get("gold_spearman", float("nan")))

    @property
    def speedup(self) -> float:
        return float(self.diagnostics.get("seconds", {}).get("speedup", float("nan")))

    # ------------------------------------------------------------------ using the surrogate
    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """``[n_texts, n_classes]`` the surrogate's class scores (NumPy only, no LM)."""
        return S.logits(self.into, self.params, counts(list(texts), self.terms, self.ngram), len(self.classes))

    def predict(self, texts: Sequence[str] | str) -> list[str]:
        """The surrogate's class for each text.

        Example:
            >>> sur.predict(["The food was superb."])  # doctest: +SKIP
            ['positive']
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        return [self.classes[i] for i in self.scores(texts).argmax(1)]

    def weights(self) -> list[tuple[str, float]]:
        """Each term's global weight: linear models' coefficient toward ``classes[1]`` (binary) or
        largest |coefficient| (multi-class); trees' impurity importance; EBMs' mean |score|."""
        if self.into in ("sparse_linear", "aug_linear"):
            coef = np.asarray(self.params["coef"])
            w = coef[0] if coef.shape[0] == 1 else np.abs(coef).max(0)
            return [(t, float(v)) for t, v in zip(self.terms, w)]
        names = self.term_names()
        return [(n, float(v)) for n, v in zip(names, self.params.get("importance", [0.0] * len(names)))]

    def term_names(self) -> list[str]:
        """Names of the model's terms (EBM pairs: ``"a & b"``; otherwise the n-grams)."""
        if self.into == "ebm":
            return [" & ".join(self.terms[j] for j in fs) for fs in self.params["term_features"]]
        return list(self.terms)

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` terms of largest |weight|."""
        return sorted(self.weights(), key=lambda tv: -abs(tv[1]))[:k]

    def explain(self, text: str) -> LocalExplanation:
        """The local view of one text: each term's contribution to the surrogate's prediction.

        Example:
            >>> e = sur.explain("The plot was dull but the acting was superb.")  # doctest: +SKIP
            >>> e.prediction, e.terms[:3]  # doctest: +SKIP
        """
        x = counts([text], self.terms, self.ngram)[0]
        z = S.logits(self.into, self.params, x[None, :], len(self.classes))[0]
        cls = int(np.argmax(z))
        freq = self.into == "tree" and not self.params.get("regression")  # a classification tree's leaf frequencies
        probs = z if freq else np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        base, contrib = S.contributions(self.into, self.params, x, len(self.classes), cls)
        ws = words(text)
        share = np.zeros(len(ws))
        named = []
        for feats, v in contrib.items():
            named.append((" & ".join(self.terms[j] for j in feats), v))
            spots = [p for j in feats for occ in term_positions(text, self.terms[j]) for p in occ]
            for p in spots:
                share[p] += v / len(spots)
        named.sort(key=lambda tv: -abs(tv[1]))
        unit = (f"change of p({self.classes[cls]})" if freq
                else f"log-odds of {self.classes[cls]}" if len(self.classes) == 2 else f"score of {self.classes[cls]}")
        return LocalExplanation(text, self.classes[cls], {c: float(p) for c, p in zip(self.classes, probs)},
                                float(base), named, [(w, float(s)) for (w, _, _), s in zip(ws, share)], unit)

    def seconds_per_text(self, texts: Sequence[str], min_seconds: float = 0.05) -> float:
        """Seconds the surrogate takes per text (features and prediction), timed over repeats."""
        texts = list(texts)
        reps, t0 = 0, time.perf_counter()
        while True:
            self.scores(texts)
            reps += 1
            dt = time.perf_counter() - t0
            if dt >= min_seconds:
                return dt / (reps * len(texts))

    # ------------------------------------------------------------------ rendering
    def title(self) -> str:
        return f"Surrogate — {KIND_TITLES.get(self.into, self.into)}"

    def summary(self) -> str:
        sp = self.speedup
        if self.fit == "score":
            return (f"model {self.model} · task {self.task.get('name', '')} · fidelity R² {self.fidelity:.3f} "
                    f"(perturbed {self.fidelity_perturbed:.3f}) · same sign as the LM {self.label_agreement:.3f} · "
                    f"{self.size.get('terms', 0)} terms" + (f" · {sp:,.0f}× faster than the LM" if sp == sp else ""))
        return (f"model {self.model} · task {self.task.get('name', '')} · fidelity {self.fidelity:.3f} "
                f"(perturbed {self.fidelity_perturbed:.3f}) · accuracy {self.accuracy:.3f} · "
                f"{self.size.get('terms', 0)} terms" + (f" · {sp:,.0f}× faster than the LM" if sp == sp else ""))

    def figures(self) -> dict[str, Figure]:
        """``"metrics"`` (fidelity, accuracy, size, speed), ``"terms"`` (the weights as bars; for a
        tree ``"tree"``, the tree drawn, and ``"rules"``), ``"examples"`` (held-out texts shaded
        by their local explanations, with the LM's and the surrogate's classes)."""
        d = self.diagnostics
        sec = d.get("seconds", {})
        if self.fit == "score":
            rows = [["fidelity: R² of the LM's log-odds (held-out)", d.get("fidelity")],
                    ["R² (word deletions)", d.get("fidelity_perturbed")],
                    ["same sign as the LM (held-out)", d.get("label_agreement")]]
            rows += ([["Spearman vs gold (surrogate)", d.get("gold_spearman")],
                      ["Spearman vs gold (LM)", d.get("lm_gold_spearman")]] if "gold_spearman" in d else
                     [["accuracy vs gold (surrogate)", d.get("accuracy")], ["accuracy vs gold (LM)",
                                                                           d.get("lm_accuracy")]])
        else:
            rows = [["fidelity (held-out)", d.get("fidelity")], ["fidelity (word deletions)",
                                                                 d.get("fidelity_perturbed")],
                    ["accuracy vs gold (surrogate)", d.get("accuracy")], ["accuracy vs gold (LM)",
                                                                         d.get("lm_accuracy")]]
        rows += [["held-out texts", d.get("n_test")], ["training texts", d.get("n_train")]]
        rows += [[f"size: {k}", v] for k, v in self.size.items()]
        if sec:
            rows += [["LM seconds per text", sec.get("lm_per_text")],
                     ["surrogate seconds per text", sec.get("surrogate_per_text")], ["speed-up", sec.get("speedup")]]
        figs: dict[str, Figure] = {"metrics": Table(["figure", "value"], rows, title=self.title())}
        if self.into == "tree":
            figs["tree"] = self._tree_graph()
            figs["rules"] = self._tree_rules()
        elif self.terms:
            top = self.top(30)
            sign = f"toward {self.classes[1]}" if len(self.classes) == 2 and self.into != "ebm" else "importance"
            figs["terms"] = Bars([t for t, _ in top], {"weight": [v for _, v in top]}, signed=self.into != "ebm",
                                 label_header="term", unit=sign, title=f"Terms ({len(self.weights())} in all)")
        ex = []
        for text, gold, lm_c, sur_c in list(zip(*(self.heldout.get(k, []) for k in ("texts", "gold", "lm",
                                                                                     "surrogate"))))[:8]:
            ex.append([self.explain(text).figure(), gold, lm_c, sur_c])
        if ex:
            figs["examples"] = Table(["held-out text (shaded by the surrogate's explanation)", "gold", "LM",
                                      "surrogate"], ex, title="Held-out texts")
        return figs

    def _node_name(self, i: int) -> str:
        f = int(self.params["feature"][i])
        if f < 0:
            value = np.asarray(self.params["value"])[i]
            if self.params.get("regression"):
                return f"#{i} leaf: log-odds {value[0]:+.2f}"
            return f"#{i} leaf: {self.classes[int(value.argmax())]} ({value.max():.2f})"
        return f"#{i} count({self.terms[f]!r}) ≤ {self.params['threshold'][i]:.1f}"

    def _tree_graph(self) -> Graph:
        left, right = np.asarray(self.params["left"]), np.asarray(self.params["right"])
        value = np.asarray(self.params["value"])
        depth = self.size.get("depth", 0)
        nodes, edges, stack = [], [], [(0, 0)]
        while stack:
            i, d = stack.pop()
            top = float(value[i].max())
            nodes.append({"name": self._node_name(i), "row": depth - d, "score": top, "terminal": left[i] < 0})
            for child, yes in ((left[i], True), (right[i], False)):
                if child >= 0:
                    edges.append({"source": self._node_name(i), "target": self._node_name(int(child)),
                                  "score": 1.0 if yes else -1.0})
                    stack.append((int(child), d + 1))
        return Graph(nodes, edges, max_nodes=64, edge_label="red: yes (≤), blue: no",
                     title="The tree (root at the top)")

    def _tree_rules(self) -> Table:
        rows = []
        for path in S._all_paths(self.params):
            conds = []
            for parent, child in zip(path, path[1:]):
                term = self.terms[int(self.params["feature"][parent])]
                op = "≤" if child == self.params["left"][parent] else ">"
                conds.append(f"count({term!r}) {op} {self.params['threshold'][parent]:.1f}")
            value = np.asarray(self.params["value"])[path[-1]]
            if self.params.get("regression"):
                rows.append([" and ".join(conds) or "(always)", self.classes[int(value[0] > 0)], float(value[0]),
                             int(self.params["n_samples"][path[-1]])])
            else:
                rows.append([" and ".join(conds) or "(always)", self.classes[int(value.argmax())], float(value.max()),
                             int(self.params["n_samples"][path[-1]])])
        third = f"log-odds of {self.classes[1]}" if self.params.get("regression") else "purity"
        return Table(["rule", "class", third, "training texts"], rows, title="Rules (one per leaf)")


@dataclass(kw_only=True)
class Student(Result):
    """A small language model trained on the teacher's soft outputs (``il.distill(lm, texts, into="student")``).

    Attributes:
        config: the student's architecture (model type, layers, d_model, heads, vocabulary).
        path: the folder the student was saved to (``il.load(path)`` loads it), or ``""``.
        losses: training loss per logged step; ``steps``: their step numbers.
        n_params: the student's and the teacher's parameter counts.

    ``agreement`` (top-1 agreement with the teacher on held-out text, per token) and ``kl``
    (mean KL(teacher ‖ student) per token at temperature 1) are in ``diagnostics``.
    ``student.lm`` (in memory, not saved) is the trained student as an :class:`~interpretlm.LM`.
    """

    config: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    losses: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    n_params: dict[str, int] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        return float(self.diagnostics.get("agreement", float("nan")))

    @property
    def kl(self) -> float:
        return float(self.diagnostics.get("kl", float("nan")))

    def title(self) -> str:
        return "Student model (knowledge distillation)"

    def summary(self) -> str:
        c = self.config
        return (f"teacher {self.model} → student {c.get('layers')} layers × d_model {c.get('d_model')} · "
                f"top-1 agreement {self.agreement:.3f} · KL {self.kl:.3f} nats/token on held-out text")

    def figures(self) -> dict[str, Figure]:
        """``"metrics"`` (agreement, KL, sizes, where it was saved) and ``"loss"`` (the training curve)."""
        d = self.diagnostics
        rows = [["top-1 agreement (held-out tokens)", d.get("agreement")], ["KL(teacher ‖ student), nats/token",
                                                                            d.get("kl")],
                ["held-out tokens", d.get("heldout_tokens")], ["training texts", d.get("n_train")],
                ["steps", d.get("steps_done")], ["temperature", self.options.get("temperature")],
                ["student parameters", self.n_params.get("student")],
                ["teacher parameters", self.n_params.get("teacher")], ["saved to", self.path or "(not saved)"]]
        figs: dict[str, Figure] = {"metrics": Table(["figure", "value"], rows, title=self.title())}
        if self.losses:
            figs["loss"] = LineChart([str(s) for s in self.steps], {"loss": self.losses}, x_label="step",
                                     y_label="loss", title="Distillation loss (T² × KL at temperature T, "
                                                           "plus the hard-label term)")
        else:
            figs["loss"] = Text("no training step was logged")
        return figs
