"""The circuit-analysis section of ``interpretlm demo``: an IOI head sweep and the logit lens."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from ..targets import Contrast
from ..viz.figures import Table, Text

if TYPE_CHECKING:
    from ..demo import Section
    from ..model import LM

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"
def _corrupt(prompt: str) -> str:
    """ABC corruption: each name mention becomes another name, so nothing points to the answer."""
    names = iter(["Anna", "Tom", "Paul"])
    return re.sub(r"\b(Mary|John)\b", lambda m: next(names), prompt)


def circuits_section(lm: "LM", prompts: list[str]) -> "Section":
    """Activation patching of every attention head on the IOI prompt, its top heads, and the
    logit lens of the same prompt."""
    from ..demo import Section
    from .logit_lens import logit_lens
    from .patching import patch

    if not lm.is_causal or not lm.has_head:
        return Section("Circuit analysis", [Text("Needs a causal language model.", muted=True)],
                       ["(skipped: needs a causal language model)"])
    prompt = next((p for p in prompts if "Mary" in p and "John" in p), IOI_PROMPT)
    corrupted = _corrupt(prompt)
    target = Contrast(" Mary", " John")
    heads = patch(lm, prompt, corrupted, target, over="heads", progress=False)
    lens = logit_lens(lm, prompt, " Mary", k=3)
    top = heads.top(5)
    lines = [f"IOI: {prompt!r} vs ABC corruption {corrupted!r}; logit(' Mary') - logit(' John') "
             f"clean {heads.clean_value:.2f}, corrupted {heads.corrupt_value:.2f}",
             "  top heads by patching effect: " + ", ".join(f"{l} {v:+.2f}" for l, v in top),
             f"  logit lens: ' Mary' first on top at {lens.first_layer_top() or 'no layer'}; final top "
             f"{lens.top_tokens[-1][0]!r} (p={float(lens.top_probs[-1][0]):.2f})",
             f"  patching sanity: all positions of one layer -> "
             f"{[v for k, v in heads.diagnostics.items() if k.startswith('sanity_all')][0]:.4f} (should be 1)"]
    figures = [Text(f"Clean {prompt!r}, corrupted {corrupted!r}; metric logit(' Mary') − logit(' John'): clean "
                    f"{heads.clean_value:.2f}, corrupted {heads.corrupt_value:.2f}. Each cell: the share of the clean "
                    "metric restored by patching that head's clean output "
                    f"({heads.diagnostics['forward_passes']:.0f} forward-pass equivalents)."),
               *heads.figures().values(),
               Table(["head", "effect"], top, title="Top heads"),
               *[replace(f, title=f.title or "Logit lens") for f in lens.figures().values()]]
    return Section("Circuit analysis: IOI heads and logit lens", figures, lines)
