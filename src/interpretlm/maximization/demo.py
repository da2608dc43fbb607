"""The demo's activation-maximization section: one neuron's top windows in the built-in corpus, and EPO."""

from __future__ import annotations

import warnings
from typing import Any


def section(lm: Any, prompts: list[str]) -> Any:
    """A neuron of the model: its top windows over the first 120 windows of the built-in corpus
    (the KJV), its dashboard figures, then a short EPO run against the corpus maximum.

    The demo's prompts are too short to mine, so the section reads the built-in corpus (a
    few sentences stand in when its Debian package is missing).
    """
    from ..demo import Section
    from ..units import Unit
    from . import maximize
    from .corpus import builtin_or

    layer = min(12, lm.n_layers - 1)
    unit = Unit(f"blocks.{layer}.mlp.neurons", 417 % lm.d_mlp)
    corpus, note = builtin_or(prompts, 8)
    lines = [note] if note else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        top = maximize(lm, unit, corpus=corpus, k=8, window=32, max_windows=120, detail=1, progress=False)
        # a taste of EPO (the published settings cost about 6 CPU seconds an iteration on the default model)
        opt = maximize(lm, unit, method="epo", length=6, population=2, swaps=8, top_k=64, steps=3, seed=0,
                       progress=False)
    lines.append(f"{unit.name}: {top.summary()}")
    for text, value in top.top(5):
        lines.append(f"  {value:+.3f}  ...{text!r}")
    a, ce, p = opt.best
    lines.append(f"EPO, 3 iterations: activation {a:.3f} at cross-entropy {ce:.2f} nats/token: {p!r} "
                 f"(corpus maximum {float(top.top_values[0, 0]):.3f})")
    figures = list(top.figures().values()) + [opt.figures()["front"]]
    return Section(f"Activation maximization ({unit.name})", figures, lines)
