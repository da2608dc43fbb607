"""A dictionary's metrics on a model: reconstruction (FVU, L0) and cross-entropy loss recovered.

Cross-entropy loss recovered (as SAELens and sparsify report it) compares the model's next-token
loss on held-out windows in three runs: clean, with the component replaced by the dictionary's
reconstruction (no error term), and with the component zero-ablated:
``(CE_zero - CE_spliced) / (CE_zero - CE_clean)`` (1: the reconstruction loses nothing; 0: no better
than deleting the component). Each window's first position is left as it is in every run (it is
also left out of training: attention-sink positions), and the loss counts the predictions of
positions 1.. .
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch

from .dictionary import Dictionary, read_mlp_input


def _ce(lm: Any, windows: list[list[int]], batch_size: int, edits: dict[str, Any] | None = None,
        mlp_input: tuple[int, Any] | None = None) -> float:
    total, count = 0.0, 0
    for s in range(0, len(windows), batch_size):
        chunk = windows[s:s + batch_size]
        ids = torch.tensor(chunk)
        with ExitStack() as stack, torch.inference_mode():
            if mlp_input is not None:
                stack.enter_context(read_mlp_input(lm, mlp_input[0], mlp_input[1]))
            if edits:
                stack.enter_context(lm.intervene(edits))
            logits = lm.forward(chunk).logits.float()
        lp = torch.log_softmax(logits[:, 1:-1], -1)
        nll = -lp.gather(-1, ids[:, 2:].unsqueeze(-1).to(lp.device)).squeeze(-1)
        total += float(nll.sum())
        count += nll.numel()
    return total / max(count, 1)


def evaluate(lm: Any, sae: Dictionary, windows: list[list[int]], *, batch_size: int = 8) -> dict[str, float]:
    """``fvu``, ``l0`` and cross-entropy loss recovered of ``sae`` on token ``windows`` (lists of ids).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> sae = Dictionary.random(lm.d_model, 64, component="blocks.1.resid_post", k=8)
        >>> m = evaluate(lm, sae, [[5, 6, 7, 8, 9, 10]] * 2)
        >>> m["l0"], m["ce_clean"] < m["ce_zero_ablated"] or m["ce_clean"] >= 0
        (8.0, True)
    """
    from .train import read_activations, reconstruction_metrics

    sae.check_model(lm)
    xs, ys = [], []
    for s in range(0, len(windows), batch_size):
        x, y = read_activations(lm, sae.component, sae.output if sae.is_transcoder else None, windows[s:s + batch_size])
        xs.append(x)
        if y is not None:
            ys.append(y)
    rec = reconstruction_metrics(sae, torch.cat(xs), torch.cat(ys) if ys else None)

    def keep_first(value: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        out = value.clone()
        out[:, 1:] = new[:, 1:].to(value.dtype)
        return out

    if sae.is_transcoder:
        seen: list[torch.Tensor] = []

        def replace(value: torch.Tensor) -> torch.Tensor:
            return keep_first(value, sae.reconstruct(seen.pop()))
        spliced = _ce(lm, windows, batch_size, {sae.output: replace}, (sae.layer, seen.append))
    else:
        def replace(value: torch.Tensor) -> torch.Tensor:
            x = value.reshape(*value.shape[:2], -1)
            return keep_first(value, sae.reconstruct(x).reshape(value.shape))
        spliced = _ce(lm, windows, batch_size, {sae.output: replace})
    clean = _ce(lm, windows, batch_size)
    zero = _ce(lm, windows, batch_size, {sae.output: lambda v: keep_first(v, torch.zeros_like(v))})
    gap = zero - clean
    recovered = (zero - spliced) / gap if abs(gap) > 1e-9 else float("nan")
    return dict(rec, ce_clean=clean, ce_spliced=spliced, ce_zero_ablated=zero, ce_loss_recovered=recovered)


__all__ = ["evaluate"]
