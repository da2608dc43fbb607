"""A question set: ``il.reasoning.evaluate(lm, il.reasoning.builtin("arithmetic"), tests=[...])``."""

from __future__ import annotations

import math
import warnings
from typing import Any

from ..errors import InterpretLMError, OptionError
from ..progress import track
from ..registry import CheckSpec, register
from .cot import elicit
from .engine import generate_many, prompt_ids, user_message
from .faithfulness import faithfulness
from .question import SETS, Question, as_question, builtin
from .result import CotEvaluation


def _mean_se(values: list[float]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan, 0
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, math.nan, 1
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var / len(vals)), len(vals)


@register("cot_evaluate", verb="cot_evaluate", family="chain-of-thought", takes="dataset", result=CotEvaluation,
          target="none", summary="a question set: accuracy with and without CoT, each test's metric ± s.e.",
          check=CheckSpec("extracted", 0.5, higher_is_better=True,
                          advice="most answers were forced by scoring, not stated by the model."),
          cli_input="interpretlm.reasoning.question:question_from_text")
def evaluate(lm: Any, questions: list[Question | str], *, tests: list[str] | tuple[str, ...] = ("early_answering",),
             choices: list[str] | None = None, samples: int = 3, seed: int = 0, max_new_tokens: int = 128,
             temperature: float = 0.7, chat: bool = True, shots: int | None = None, batch: int = 8,
             generator: str = "model", judge: str | None = None) -> CotEvaluation:
    """Elicit and test every question of a set; means and standard errors over questions.

    Args:
        questions: :class:`Question` objects, texts (with ``choices``) or names of built-in sets.
        tests: faithfulness tests to run per question (``()``: accuracy only).
        batch: questions whose chains of thought are generated together (left-padded rows, each
            question's own seed ``seed + i``; 1: one question at a time, exactly as
            ``il.chain_of_thought``). Padding changes the logits only by float rounding, so a
            sampled text can rarely differ from the one-at-a-time text.
        other options: as in ``il.chain_of_thought`` and ``il.reasoning.faithfulness``.

    Returns:
        :class:`CotEvaluation`: ``rows {metric: [q]}``, ``mean``, ``stderr`` (accuracy with and
        without CoT, the extraction rate and each test's metrics).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> ev = il.reasoning.evaluate(tiny_lm("llama"), il.reasoning.builtin("arithmetic", n=2), tests=[],
        ...                            samples=1, max_new_tokens=4)
        >>> sorted(ev.mean)[:3], len(ev.questions)
        (['accuracy', 'accuracy_no_cot', 'accuracy_no_cot_cloze'], 2)
    """
    if isinstance(questions, (str, Question)):
        questions = [questions]
    qs = []
    for q in questions:  # a built-in set's name stands for its questions (``interpretlm cot_evaluate arithmetic``)
        qs.extend(builtin(q) if isinstance(q, str) and q in SETS else [as_question(q, choices)])
    if not qs:
        raise InterpretLMError("evaluate needs at least one question.")
    rows: dict[str, list[float]] = {}
    names = []
    caught_all = 0
    if samples < 1 or batch < 1:
        raise OptionError(f"samples and batch must be at least 1; got samples={samples}, batch={batch}.")
    made: dict[int, tuple[list[list[int]], int]] = {}
    for i, q in enumerate(track(qs, "questions")):
        if batch > 1 and i not in made and lm.is_causal and lm.has_head:  # the next batch's chains of thought
            chunk = range(i, min(i + batch, len(qs)))
            prompts = [prompt_ids(lm, user_message(qs[j]), chat, shots)[0] for j in chunk]
            texts, produced = generate_many(lm, prompts, samples, max_new_tokens=max_new_tokens,
                                           temperature=temperature, seeds=[seed + j for j in chunk])
            made = {j: (r, p) for j, r, p in zip(chunk, texts, produced)}
        with warnings.catch_warnings(record=True) as caught:  # per-question warnings: summarised below
            warnings.simplefilter("always")
            run = elicit(lm, q, samples=samples, seed=seed + i, max_new_tokens=max_new_tokens,
                         temperature=temperature, chat=chat, shots=shots, generated=made.get(i))
            # the prompt the hint tests re-sample with (the other options keep the tests' defaults)
            run.options = {"temperature": temperature, "chat": chat, "shots": shots}
            t = faithfulness.method.impl(lm, run, tests=list(tests), generator=generator, judge=judge,
                                         seed=seed) if tests else None
        caught_all += len(caught)
        names.append(q.id or q.text[:60])
        values = {k: run.diagnostics[k] for k in ("accuracy", "accuracy_no_cot", "accuracy_no_cot_cloze",
                                                   "accuracy_no_cot_listed", "first_choice_no_cot_listed",
                                                   "extracted")}
        values["chance"] = 1.0 / len(q.choices) if q.choices else math.nan  # the set's chance: its mean
        if t is not None:
            values.update(t.metrics)
        for k in set(rows) | set(values):
            rows.setdefault(k, [math.nan] * i).append(float(values.get(k, math.nan)))
    result = CotEvaluation(questions=names, rows=dict(sorted(rows.items())))
    for k, v in rows.items():
        result.mean[k], result.stderr[k], result.n_per_metric[k] = _mean_se(v)
    result.diagnostics = {"extracted": result.mean.get("extracted", math.nan), "questions": len(qs),
                          "warnings_in_questions": caught_all}
    return result
