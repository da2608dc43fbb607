"""The attention part of ``interpretlm demo``: every layer and head of one prompt, and rollout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model import LM
from ..viz.figures import Table, TokenShading
from .patterns import attention
from .rollout import rollout_matrix

if TYPE_CHECKING:
    from ..demo import Section


def attention_section(lm: LM, prompts: list[str]) -> Section:
    """Head view + model view of all layers × heads, the most distinctive heads, and rollout."""
    from ..demo import Section  # here, not at import: demo.py imports this module

    prompt = next((p for p in prompts if "cat" in p), prompts[0])
    att = attention(lm, prompt)
    s = att.heads_summary()
    lines = [f"{prompt!r}: {len(att.layers)} layers × {len(att.heads)} heads"]
    rows = []
    for metric in ("previous_token", "first_token", "self", "induction"):
        top = [t for t in s.top(metric, 3) if t[2] == t[2]]  # drop NaN (no repeated token)
        if top:
            lines.append(f"    top {metric.replace('_', ' ')} heads: "
                         + ", ".join(f"L{l}H{h} {v:.2f}" for l, h, v in top))
            rows.append((metric.replace("_", " "), ", ".join(f"L{l} H{h} ({v:.2f})" for l, h, v in top)))
    roll = rollout_matrix(att.patterns)[-1]  # the same forward pass: all layers are kept
    figures = [att.figures()["attention"], Table(["score", "top heads"], rows, title="Most distinctive heads"),
               TokenShading(att.tokens, roll.tolist(), special=att.special, label="rollout",
                            title="Attention rollout into the last token")]
    return Section("Attention (all layers × heads)", figures, lines)
