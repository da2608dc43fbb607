"""The LRP part of ``interpretlm demo``: AttnLRP relevance of the IOI prompt, with its conservation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model import LM
from ..targets import NextToken, prediction_positions
from .lrp import lrp

if TYPE_CHECKING:
    from ..demo import Section


def lrp_section(lm: LM, prompts: list[str]) -> Section:
    """Relevance of each token for the model's top next token of the first prompt."""
    from ..demo import Section  # here, not at import: demo.py imports this module

    prompt = prompts[0]
    batch = lm.tokenize(prompt)
    out = lm.forward(batch, grad=False)
    top_id = int(out.logits[0, prediction_positions(lm, batch)[0]].argmax())  # an id: decoded text may not re-encode
    top = lm.tokenizer.decode([top_id])
    r = lrp(lm, prompt, NextToken(top_id))
    d = r.diagnostics
    line = (f"{prompt!r} -> {top!r}: logit {d['output_relevance']:.2f}, input relevance "
            f"{d['input_relevance']:.2f} (softmax rule {d['attention_rule']}: absorbed {d['absorbed_share']:.1%}, "
            f"conservation error counting it {d['ledger_error']:.2%}); top: "
            + ", ".join(f"{t!r} {v:+.2f}" for t, v in r.top(4)))
    return Section(f"Layer-wise relevance propagation (AttnLRP) for {top!r}", list(r.figures().values()), [line])
