"""The probing section of ``interpretlm demo``: a POS layer curve with control selectivity."""

from __future__ import annotations

import warnings
from typing import Any


def probing_section(lm: Any, prompts: list[str]) -> Any:
    """Part of speech probed every few layers (32 generated sentences, control task on).

    The demo's prompts are too few to train a probe on, so the section uses the built-in
    sentence generator; it takes a few seconds on the default model.
    """
    from ..demo import Section
    from ..viz.figures import Text
    from . import probe, tasks

    try:
        task = tasks.pos(n=32, seed=0, min_count=3)
    except Exception as exc:   # spaCy missing: say how to get it instead of failing the demo
        return Section("Probing (part of speech)", [Text(str(exc))], [f"skipped: {exc}"])
    step = max(1, lm.n_layers // 6)
    layers = sorted(set(range(0, lm.n_layers, step)) | {lm.n_layers - 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = probe(lm, task, layers=layers, probe="logistic", control=True, mdl=False, batch_size=32, progress=False)
    lines = [f"{task!r}; {rep.split['n_train']} train / {rep.split['n_test']} test words"]
    for row in rep.table:
        lines.append(f"  layer {row['layer']:>5}: accuracy {row['accuracy']:.3f}  control {row['control_accuracy']:.3f}"
                     f"  selectivity {row['selectivity']:.3f}")
    return Section("Probing (part of speech)", list(rep.figures().values()), lines)
