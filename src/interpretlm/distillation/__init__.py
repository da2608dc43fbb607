"""Model distillation for interpretability: surrogates and students, with fidelity.

* ``il.distill(lm, task, into="sparse_linear" | "tree" | "ebm" | "aug_linear")`` — an
  interpretable surrogate of the LM's predictions on a labelled task (registered method
  ``"surrogate"``), with fidelity on held-out and word-deleted texts, accuracy, size and
  the speed-up over the LM; ``sur.explain(text)`` shows each term's contribution;
* ``il.distill(lm, texts, into="student", layers=2, d_model=128)`` — a small Llama-like
  student trained on the teacher's soft outputs (Hinton et al., 2015; registered method
  ``"student"``), saved as a folder ``il.load`` opens;
* ``il.compare_explanations(lm_a, lm_b, prompts, method=...)`` — rank agreement of two
  models' attributions (teacher vs student), and ``surrogate_vs_shap`` for a surrogate's
  local explanations against the LM's KernelSHAP.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> sur = il.distill(lm, il.tasks.sentiment(), into="sparse_linear", max_terms=30)  # doctest: +SKIP
    >>> sur.fidelity, sur.accuracy, sur.top(5)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ..registry import call, register_verb
from .agreement import ExplanationAgreement, compare_explanations, spearman, surrogate_vs_shap
from .errors import DistillationError
from .result import LocalExplanation, Student, Surrogate
from .run import surrogate
from .student import student
from .surrogates import KINDS


def distill(lm: Any, data: Any, into: str = "sparse_linear", **options: Any) -> Any:
    """Distil ``lm`` into an interpretable surrogate (``data``: a labelled task) or a student
    language model (``into="student"``; ``data``: texts, a task or a corpus).

    Args:
        lm: the teacher.
        data: ``il.tasks.sentiment()`` (or any sentence-level task) for a surrogate; a list or
            iterable of texts (or a task, whose texts are used) for a student.
        into: ``"sparse_linear"``, ``"tree"``, ``"ebm"``, ``"aug_linear"`` or ``"student"``.
        options: the method's options (``max_terms``, ``max_depth``...; for a student
            ``layers``, ``d_model``, ``temperature``, ``steps``, ``path``...).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> sur = il.distill(tiny_lm("llama"), il.tasks.sentiment(40), into="tree", max_depth=2, calibrate=True)
        >>> sur.size["depth"] <= 2
        True
    """
    if into == "student":
        return call("student", lm, data, **options)
    if into not in KINDS:
        raise DistillationError(f"into={into!r}: choose one of {', '.join(KINDS)} or 'student'.")
    return call("surrogate", lm, data, into=into, **options)


register_verb("distill", distill)

__all__ = ["DistillationError", "ExplanationAgreement", "compare_explanations", "spearman", "surrogate_vs_shap", "LocalExplanation", "Student", "Surrogate", "distill", "student", "surrogate"]
