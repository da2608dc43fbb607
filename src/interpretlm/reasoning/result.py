"""Results of the chain-of-thought family: a run (sampled CoTs and answers), its faithfulness tests,
and a question set's evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..results import Result
from ..viz.figures import Bars, Figure, LineChart, Table, Text, TokenShading


def _fmt(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) and math.isfinite(v) else v


@dataclass(kw_only=True)
class ChainOfThought(Result):
    """Sampled chains of thought for one question and the answers read from them.

    Attributes:
        question: the question (``Question.to_dict()``).
        prompt: the prompt text the model saw (chat-formatted when ``chat``).
        prompt_ids: ``[P]`` its token ids.
        chat: whether the model's chat template formatted the prompt (False: plain prompt fallback).
        texts: ``[n]`` the generated texts.
        reasoning: ``[n]`` each text without its answer line.
        sentences: ``[n][S_i]`` the reasoning's sentences.
        answers: ``[n]`` the answer of each sample (``None``: none could be read or forced).
        paths: ``[n]`` how each answer was found: ``answer_line``, ``regex``, ``scored`` (the
            choice with the highest log-probability after ``"Answer:"``) or ``none``.
        candidates: the answers scored when forcing (the choices; for open questions the
            right answer and the answers read).
        forced: ``[n]`` the forced answer after the full reasoning.
        choice_logprobs: ``[n][n_choices]`` log-probabilities of each candidate after the reasoning.
        no_cot_logprobs: ``[n_choices]`` the same with no reasoning: standard few-shot prompting
            (the same worked examples with their answers only, then the question alone and
            ``"Answer:"``; see ``cot.no_cot_logprobs``). ``diagnostics`` also holds
            ``accuracy_no_cot_cloze`` (zero-shot: the question alone), ``accuracy_no_cot_listed``
            (forced right after the CoT prompt with its listed choices) and
            ``first_choice_no_cot_listed`` (that answer was the first choice).
        correct: ``[n]`` 1/0 per sample (NaN when the right answer is unknown).
    """

    question: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    chat: bool = True
    texts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    sentences: list[list[str]] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)
    choice_logprobs: list[list[float]] = field(default_factory=list)
    no_cot_logprobs: list[float] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)

    nan_marks = ("correct", "diagnostics.accuracy", "diagnostics.accuracy_no_cot", "diagnostics.accuracy_no_cot_cloze",
                 "diagnostics.accuracy_no_cot_listed", "diagnostics.first_choice_no_cot_listed")

    def summary(self) -> str:
        d = self.diagnostics
        acc = d.get("accuracy", float("nan"))
        return (f"{len(self.texts)} samples · answers {self.answers} · extracted {d.get('extracted', 0):.0%} · "
                f"accuracy {acc:.2f} (no CoT {d.get('accuracy_no_cot', float('nan')):.2f})")

    def figures(self) -> dict[str, Figure]:
        import numpy as np

        rows = [[i, a if a is not None else "—", p, _fmt(c), len(s), t]
                for i, (a, p, c, s, t) in enumerate(zip(self.answers, self.paths, self.correct, self.sentences,
                                                          self.reasoning))]
        figs: dict[str, Figure] = {"samples": Table(["sample", "answer", "found by", "correct", "sentences",
                                                     "reasoning"], rows, title="Sampled chains of thought",
                                                    nan="the right answer is unknown")}
        if self.choice_logprobs and self.candidates:
            lp = np.asarray(self.choice_logprobs, dtype=float)
            with_cot = np.exp(lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)).mean(0)
            nc = np.asarray(self.no_cot_logprobs, dtype=float)
            no_cot = np.exp(nc - np.logaddexp.reduce(nc)) if nc.size else np.full(len(self.candidates), np.nan)
            figs["answers"] = Bars(labels=list(self.candidates), series={"after the CoT": with_cot.tolist(),
                                                                          "no CoT": no_cot.tolist()},
                                   title="Forced answer (probability among the choices)", unit="probability",
                                   label_header="choice")
        return figs


@dataclass(kw_only=True)
class CotFaithfulness(Result):
    """Faithfulness tests of a chain-of-thought run (Lanham et al. 2023, Turpin et al. 2023, Chen et al. 2025).

    Attributes:
        tests: the tests run.
        metrics: ``{"<test>.<metric>": value}`` averaged over samples (NaN: does not apply,
            e.g. a verbalization rate when no answer switched to the hint).
        curves: ``{test: [G] share of samples with the same answer as with the full CoT}`` on the
            grid ``grid`` of fractions of the reasoning kept (early answering) or placed before
            the mistake (adding mistakes).
        grid: ``[G]`` fractions of the reasoning.
        per_sample: ``{"<test>.<metric>": [n] values}``.
        sentences: ``[n][S_i]`` the sentences of each sample.
        importance: ``[n][S_i]`` step necessity: the drop in the probability of the full-CoT answer
            when the sentence is removed.
        generator: ``{test: "model" | "rule" | "model+rule" | "none"}`` who wrote the mistakes and
            paraphrases (the rule stands in where the generator model's output was unusable).
        judge: the judge model asked whether hinted reasonings mention the hint (``None``: none).
        details: ``{test: [n] per-sample records}`` (answers, hint texts, switches...).
    """

    tests: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    grid: list[float] = field(default_factory=list)
    per_sample: dict[str, list[float]] = field(default_factory=dict)
    sentences: list[list[str]] = field(default_factory=list)
    importance: list[list[float]] = field(default_factory=list)
    generator: dict[str, str] = field(default_factory=dict)
    judge: str | None = None
    details: dict[str, list[Any]] = field(default_factory=dict)
    prompt: str = ""

    nan_marks = ("metrics", "curves", "per_sample", "importance", "details", "diagnostics")

    @property
    def aoc(self) -> dict[str, float]:
        """Area over the "same answer" curve per curve test (0: the CoT never matters; 1: every step does)."""
        return {k.split(".")[0]: v for k, v in self.metrics.items() if k.endswith(".aoc")}

    def summary(self) -> str:
        return " · ".join(f"{k} {v:.3f}" for k, v in self.metrics.items() if isinstance(v, float)
                          and math.isfinite(v))

    def figures(self) -> dict[str, Figure]:
        figs: dict[str, Figure] = {}
        figs["tests"] = Table(["metric", "value"], [[k, _fmt(v)] for k, v in self.metrics.items()],
                              title="Faithfulness tests", nan="does not apply (no sentence, no switch...)")
        if self.curves:
            figs["curves"] = LineChart(x=[f"{g:.0%}" for g in self.grid],
                                       series={k: v for k, v in self.curves.items()}, x_label="share of the CoT",
                                       y_label="same answer as with the full CoT", y_min=0.0, y_max=1.0,
                                       title="Early answering and added mistakes")
        for i, (sents, imp) in enumerate(zip(self.sentences, self.importance)):
            if sents and imp and i < 3:
                figs[f"importance_{i}"] = TokenShading(tokens=[s + " " for s in sents], values=imp,
                                                       label="step necessity", unit="Δ p(answer)",
                                                       title=f"Sample {i}: step necessity per sentence")
        if self.generator or self.judge:
            figs["generator"] = Text(text="Mistakes and paraphrases written by: " + (", ".join(
                f"{k}: {v}" for k, v in self.generator.items()) or "none") + (
                f"; verbalization judged by {self.judge}" if self.judge else ""), muted=True)
        return figs


@dataclass(kw_only=True)
class CotEvaluation(Result):
    """A question set: accuracy with and without CoT and each test's metric, mean ± standard error over questions.

    Attributes:
        questions: ``[q]`` the questions' ids or texts.
        rows: ``{metric: [q] values}`` per question.
        mean, stderr: ``{metric: value}`` over questions (NaN-aware; NaN when no question applies).
        n_per_metric: ``{metric: questions with a value}``.
    """

    questions: list[str] = field(default_factory=list)
    rows: dict[str, list[float]] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    stderr: dict[str, float] = field(default_factory=dict)
    n_per_metric: dict[str, int] = field(default_factory=dict)

    nan_marks = ("rows", "mean", "stderr", "diagnostics")

    def summary(self) -> str:
        keys = [k for k in ("accuracy", "accuracy_no_cot") if k in self.mean]
        return f"{len(self.questions)} questions · " + " · ".join(
            f"{k} {self.mean[k]:.3f} ± {self.stderr.get(k, float('nan')):.3f}" for k in keys)

    def figures(self) -> dict[str, Figure]:
        table = Table(["metric", "mean", "standard error", "questions"],
                      [[k, _fmt(v), _fmt(self.stderr.get(k, float("nan"))), self.n_per_metric.get(k, 0)]
                       for k, v in self.mean.items()], title="Metrics over the question set",
                      nan="no question where it applies")
        acc = {k: [self.mean[k]] for k in ("accuracy", "accuracy_no_cot") if k in self.mean}
        figs: dict[str, Figure] = {"metrics": table}
        if acc:
            figs["accuracy"] = Bars(labels=["accuracy"], series=acc, title="Accuracy with and without CoT",
                                    unit="share correct", scale=1.0)
        return figs
