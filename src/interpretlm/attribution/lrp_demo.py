"""The LRP part of ``interpretlm demo``: AttnLRP relevance of the IOI prompt, with its conservation."""

from __future__ import annotations

from ..demo import Section
from ..model import LM
from ..targets import NextToken
from .lrp import lrp


def lrp_section(lm: LM, prompts: list[str]) -> Section:
    """Relevance of each token for the model's top next token of the first prompt."""
    prompt = prompts[0]
    top = lm.top_tokens(prompt, k=1)[0][0][0]
    r = lrp(lm, prompt, NextToken(top))
    d = r.diagnostics
    line = (f"{prompt!r} -> {top!r}: logit {d['output_relevance']:.2f}, input relevance "
            f"{d['input_relevance']:.2f} (conservation error {d['conservation_error']:.2%}); top: "
            + ", ".join(f"{t!r} {v:+.2f}" for t, v in r.top(4)))
    return Section(f"Layer-wise relevance propagation (AttnLRP) for {top!r}", r._html_body(), [line])
