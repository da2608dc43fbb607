"""The demo's attribution section: the demo prompts attributed side by side by three methods."""

from __future__ import annotations

import numpy as np

from ..demo import Section
from ..errors import InterpretLMError
from ..model import LM
from ..targets import NextToken
from ..viz import html as H

DEMO_METHODS = {"input_x_gradient": {}, "occlusion": {}, "kernel_shap": {"n_samples": 64, "seed": 0}}


def _top_token_id(lm: LM, prompt: str) -> int:
    """The id of the most likely next token (an id: a decoded byte piece may not re-tokenize)."""
    import torch

    from ..targets import prediction_positions

    with torch.no_grad():
        out = lm.forward(prompt, grad=False)
    if out.logits is None:
        raise InterpretLMError("This model has no LM head, so it has no next token to explain.")
    pos = prediction_positions(lm, out.batch)
    return int(out.logits[0, int(pos[0])].argmax())


def attribution_section(lm: LM, prompts: list[str]) -> Section:
    """Why the top next token? Gradient × input, occlusion and KernelSHAP for each demo prompt.

    Cheap methods only (about 80 sequences per prompt, scored in batches), so the whole demo
    stays under a minute; ``interpretlm attribute`` runs the adaptive Integrated Gradients.
    """
    from . import compare

    parts, lines = [], []
    for prompt in prompts:
        try:
            token_id = _top_token_id(lm, prompt)
            token = lm.tokenizer.decode([token_id])
            table = compare(lm, prompt, NextToken(token_id), methods=list(DEMO_METHODS), options=DEMO_METHODS,
                            with_faithfulness=False, batch_size=32)
        except InterpretLMError as exc:
            parts.append(f"<h3>{H.escape(prompt)}</h3><p>skipped: {H.escape(exc)}</p>")
            lines.append(f"{prompt!r}: skipped ({exc})")
            continue
        cost = ", ".join(f"{r['method']} {r['model_evaluations']} evals" for r in table.table)
        parts.append(f"<h3>{H.escape(prompt)} → {H.escape(repr(token))}</h3>" + table._html_body().split(
            "<h2>Cost and faithfulness</h2>")[0] + f'<p class="il-muted">{H.escape(cost)}; KernelSHAP efficiency '
            f"error {table.table[-1]['completeness_error']:.1e}</p>")
        lines.append(f"{prompt!r} -> {token!r}")
        for m, row in zip(table.methods, np.asarray(table.scores)):
            top = np.argsort(-row)[:3]
            lines.append(f"    {m:<17} " + "  ".join(f"{table.features[i]!r} {row[i]:+.2f}" for i in top))
    return Section("Feature attribution: why the top next token?", "".join(parts), lines)
