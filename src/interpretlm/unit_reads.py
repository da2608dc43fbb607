"""Reading units outside a mining pass: their values on chosen corpus windows, what they write to
the residual stream, and how that moves the logits. Shared by activation maximization, feature
dictionaries and natural-language explanations of units."""

from __future__ import annotations

from typing import Any

import torch

from .units import BoundUnits, kind_of, layer_of, unit_values


def fetch_windows(corpus: Any, tokenizer: Any, window: int, wanted: set[int]) -> dict[int, list[int]]:
    """The token ids of windows ``wanted`` (streamed again; stops after the last one).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.maximization import corpus
        >>> got = fetch_windows(corpus(["the cat sat on the mat"] * 4), tiny_lm().tokenizer, 4, {0, 2})
        >>> sorted(got), len(got[2])
        ([0, 2], 4)
    """
    out: dict[int, list[int]] = {}
    last = max(wanted) if wanted else -1
    for i, ids in enumerate(corpus.windows(tokenizer, window)):
        if i in wanted:
            out[i] = ids
        if i >= last:
            break
    return out


def window_values(lm: Any, bound: BoundUnits, windows: list[list[int]], batch_size: int) -> torch.Tensor:
    """``[n_windows, W, n_units]`` the units' per-token values on the given windows.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.units import Unit, bind_units
        >>> lm = tiny_lm("llama")
        >>> window_values(lm, bind_units(lm, Unit("blocks.1.mlp.neurons", 3)), [[5, 6, 7], [8, 9, 10]], 2).shape
        torch.Size([2, 3, 1])
    """
    comps = bound.components
    until = max(0, max(layer_of(c) for c in comps))
    outs = []
    with lm.capture(comps) as cache, torch.inference_mode():
        for s in range(0, len(windows), batch_size):
            lm.run(windows[s:s + batch_size], until=until, head=False)
            outs.append(unit_values(lm, bound, cache).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0, 0, bound.size)


def output_direction(lm: Any, unit: Any) -> torch.Tensor | None:
    """``[d_model]`` what a unit writes to the residual stream per unit of activation (``None`` for head norms).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.units import Unit
        >>> lm = tiny_lm("llama")
        >>> output_direction(lm, Unit("blocks.1.mlp.neurons", 3)).shape == (lm.d_model,)
        True
    """
    kind = kind_of(lm, unit.component)
    if getattr(unit, "dictionary", None) is not None:     # a dictionary's feature: its decoder row, as a direction
        if kind == "attn.heads":
            return None
        unit = type(unit)(unit.component, direction=unit.dictionary.direction(unit.index))
    if kind == "mlp.neurons":
        proj = lm.site(f"blocks.{layer_of(unit.component)}.mlp").module
        w = proj.weight.detach().float()
        w = w.T if type(proj).__name__ == "Conv1D" else w            # GPT-2's Conv1D stores [d_mlp, d_model]
        return w[:, unit.index] if unit.direction is None else w @ unit.direction
    if kind == "attn.heads":
        if unit.direction is not None and unit.direction.numel() == lm.d_model:
            return unit.direction
        return None
    if unit.direction is not None:
        return unit.direction
    e = torch.zeros(lm.d_model)
    e[unit.index] = 1.0
    return e


def logit_effects(lm: Any, direction: torch.Tensor) -> torch.Tensor | None:
    """``[vocab]`` how adding ``direction`` to the last residual stream moves each logit (final norm and unembedding).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> logit_effects(lm, torch.ones(lm.d_model)).shape[0] == lm.vocab_size
        True
    """
    if not lm.has_head:
        return None
    d = direction.to(lm.dtype).view(1, 1, -1)
    with torch.no_grad():
        a = lm.logits_at(d.to(lm.device))[0, 0]
        b = lm.logits_at(torch.zeros_like(d).to(lm.device))[0, 0]
    return (a - b).float().cpu()


__all__ = ["fetch_windows", "logit_effects", "output_direction", "window_values"]
