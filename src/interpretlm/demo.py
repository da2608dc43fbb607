"""``interpretlm demo``: the main job on the default model, written to one HTML report.

The demo is a list of *sections*: the next-token predictions, then one section per method
that declares one in the registry (``register(..., demo="module:function", demo_order=N)``),
in ``demo_order``. A section is ``section(lm, prompts) -> Section``; the demo runs them in
order, prints their text to the terminal and draws their figure payloads into
``interpretlm-demo.html``. A new family's section appears without touching this file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .model import LM
from .results import atomic_write
from .viz.figures import Bars, Figure, Text, TokenStrip
from .viz.render import render_all
from .viz.report import report_page

DEMO_PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The capital of France is",
    "The cat sat on the mat because it was",
    "def add(a, b):\n    return",
]


@dataclass
class Section:
    """One part of the demo report: figure payloads (drawn by :mod:`interpretlm.viz`) and terminal text.

    Attributes:
        title: the section's heading.
        figures: the payloads shown, in order (a result's ``figures()`` values, tables, text...).
        text: lines printed to the terminal.
        seconds: how long the section took (set by :func:`run_demo`).
    """

    title: str
    figures: list[Figure] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def html(self) -> str:
        """The section's figures drawn in order (their titles as ``<h3>`` under the section's ``<h2>``)."""
        return render_all(self.figures, level=3)


def next_tokens_section(lm: LM, prompts: list[str]) -> Section:
    """Top next tokens of each prompt, with the prompt's tokenization."""
    batch = lm.tokenize(prompts)
    tops = lm.top_tokens(batch, k=5)
    figures: list[Figure] = []
    lines = []
    for i, (prompt, top) in enumerate(zip(prompts, tops)):
        row = batch.row(i)
        figures.append(TokenStrip(row.tokens[0], row.special[0].tolist(), title=prompt))
        figures.append(Bars([repr(tok) for tok, _ in top], {"probability": [p for _, p in top]}, scale=1.0,
                            width=200, label_header="next token", unit="probability"))
        lines.append(f"{prompt!r}")
        lines.append("    " + "   ".join(f"{tok!r} {p:.3f}" for tok, p in top))
    return Section("Next-token predictions", figures, lines)


def default_sections() -> list[Callable[[LM, list[str]], Section]]:
    """The demo's sections, in order: next tokens, then each registered method's section by ``demo_order``.

    Sections are imported only here, so that ``import interpretlm.demo`` stays light and each
    family's module may import :class:`Section` from this one.
    """
    import importlib

    from .registry import methods

    sections: list[Callable[[LM, list[str]], Section]] = [next_tokens_section]
    for m in sorted((m for m in methods() if m.demo is not None), key=lambda m: m.demo_order):
        fn = m.demo
        if isinstance(fn, str):
            module, _, name = fn.partition(":")
            fn = getattr(importlib.import_module(module), name)
        if fn not in sections:
            sections.append(fn)
    return sections


def run_demo(model: str | LM | None = None, out: str | Path = "interpretlm-demo.html",
             prompts: list[str] | None = None, echo: Callable[[str], None] = print,
             sections: list[Callable[[LM, list[str]], Section]] | None = None) -> Path:
    """Run every demo section on ``model`` (default: the built-in default) and write the report.

    Example:
        >>> from interpretlm.demo import run_demo  # doctest: +SKIP
        >>> run_demo()  # doctest: +SKIP
    """
    from .loading import load

    t0 = time.perf_counter()
    lm = model if isinstance(model, LM) else load(model)
    prompts = prompts or DEMO_PROMPTS
    echo(f"Model: {lm.name} ({lm.family.name}, {lm.n_layers} layers, {lm.n_heads} heads), "
         f"loaded in {time.perf_counter() - t0:.1f} s")
    done = []
    for make in sections or default_sections():
        t = time.perf_counter()
        sec = make(lm, prompts)
        sec.seconds = time.perf_counter() - t
        echo(f"\n== {sec.title} ({sec.seconds:.1f} s)")
        for line in sec.text:
            echo(line)
        done.append(sec)
    html = report_page(f"interpretlm demo — {lm.name}",
                       [(s.title, render_all([*s.figures, Text(f"{s.seconds:.1f} s", muted=True)], level=3))
                        for s in done],
                       subtitle=f"{lm.info().architecture}, {lm.n_layers} layers; total "
                                f"{time.perf_counter() - t0:.1f} s")
    path = Path(out)
    atomic_write(path, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
    echo(f"\nWrote {path} ({time.perf_counter() - t0:.1f} s in all)")
    return path
