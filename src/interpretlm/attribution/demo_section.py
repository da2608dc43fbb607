"""The demo's attribution section: the demo prompts attributed side by side by three methods."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..demo import Section
from ..errors import InterpretLMError
from ..model import LM
from ..targets import NextToken
from ..viz.figures import Figure, Text

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

    figures: list[Figure] = []
    lines = []
    for prompt in prompts:
        try:
            token_id = _top_token_id(lm, prompt)
            token = lm.tokenizer.decode([token_id])
            table = compare(lm, prompt, NextToken(token_id), methods=list(DEMO_METHODS), options=DEMO_METHODS,
                            with_faithfulness=False, batch_size=32)
        except InterpretLMError as exc:
            figures.append(Text(f"skipped: {exc}", title=prompt))
            lines.append(f"{prompt!r}: skipped ({exc})")
            continue
        cost = ", ".join(f"{r['method']} {r['model_evaluations']} evals" for r in table.table)
        figures.append(replace(table.figures()["attributions"], title=f"{prompt} → {token!r}",
                               caption="each row scaled to its own maximum",
                               note=f"{cost}; KernelSHAP efficiency error {table.table[-1]['completeness_error']:.1e}"))
        lines.append(f"{prompt!r} -> {token!r}")
        for m, row in zip(table.methods, np.asarray(table.scores)):
            top = np.argsort(-row)[:3]
            lines.append(f"    {m:<17} " + "  ".join(f"{table.features[i]!r} {row[i]:+.2f}" for i in top))
    return Section("Feature attribution: why the top next token?", figures, lines)
