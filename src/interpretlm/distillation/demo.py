"""The distillation section of ``interpretlm demo``: a sparse linear surrogate of the model on sentiment."""

from __future__ import annotations

import warnings
from typing import Any


def distillation_section(lm: Any, prompts: list[str]) -> Any:
    """A 20-term sparse linear surrogate of the model's sentiment predictions (80 template
    texts, a quarter held out), its fidelity and speed-up, and one sentence explained.

    The demo's prompts carry no labels, so the section uses the built-in sentiment task
    (through ``il.tasks``); it takes a few seconds on the default model.
    """
    import interpretlm as il

    from ..demo import Section
    from ..viz.figures import Text

    task = il.tasks.sentiment(80, seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sur = il.distill(lm, task, into="sparse_linear", max_terms=20, perturbations=1, progress=False)
    except il.InterpretLMError as exc:  # e.g. a model that predicts one class for every text
        return Section("Distillation (surrogate)", [Text(str(exc))], [f"skipped: {exc}"])
    e = sur.explain("The plot was dull but the acting was superb.")
    figs = sur.figures()
    lines = [sur.summary(), f"check: {sur.check}",
             f"'The plot was dull but the acting was superb.' -> {e.prediction}: "
             + ", ".join(f"{t} {v:+.2f}" for t, v in e.terms[:4])]
    return Section("Distillation (surrogate)", [figs["metrics"], figs["terms"], e.figure()], lines)
