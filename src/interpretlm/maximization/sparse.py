"""Mining dictionary features from their non-zero activations only.

A sparse dictionary's code is zero almost everywhere (a TopK SAE: ``k`` of ``n`` features a token) and
never negative, so a batch's activations are kept as ``(window, position, feature, value)`` entries of
the non-zeros and folded into the mining state from them: window maxima by a scatter (a silent window's
maximum is 0), the histogram from the non-zeros plus one count of the sampled zeros, counts and sums
over the non-zeros. The state equals the dense fold's (sums to float rounding); the dense
``[batch, W, n_features]`` code lives only while the batch is encoded.
"""

from __future__ import annotations

from typing import Any

import torch


def update_sparse(state: Any, cols: "slice | torch.Tensor", shape: tuple[int, int, int], win: torch.Tensor,
                  pos: torch.Tensor, unit: torch.Tensor, val: torch.Tensor, window0: int, fire_threshold: float,
                  gen: torch.Generator) -> None:
    """``MiningState.update`` for units that are zero almost everywhere and never negative (dictionary features),
    from their non-zero values only: ``val [m]`` at window ``win [m]``, position ``pos [m]`` and unit
    ``unit [m]`` (columns ``0..n-1`` of ``cols``) of a batch of ``shape = (batch, W, n)``. The state
    it leaves is the one ``update`` leaves on the dense values (the sums up to float rounding):
    a silent window's maximum is 0, reached first at its position 0, and the zeros of the histogram's
    sampled tokens all fall in the bin of 0."""
    from .mining_state import _top

    t = state.t
    b, W, n = shape
    k = t["top_v"].shape[1]
    flat_key = unit * b + win
    wmax = torch.zeros(n * b).scatter_reduce_(0, flat_key, val, "amax").view(n, b)            # [n, b]
    # the first position of each window's maximum (silent windows: position 0, as argmax over zeros)
    at_max = torch.where(val == wmax.view(-1)[flat_key], pos, W)
    first = torch.full((n * b,), W, dtype=torch.long).scatter_reduce_(0, flat_key, at_max, "amin").view(n, b)
    first = torch.where(first == W, 0, first)

    def token_index(order: torch.Tensor, base: int) -> torch.Tensor:
        out = torch.full_like(order, -1)
        new = order >= base
        if new.any():
            u, j = new.nonzero(as_tuple=True)
            w = order[u, j] - base
            out[u, j] = (window0 + w) * W + first[u, w]
        return out
    rng = t["hist_range"][cols]
    unset = rng == 0
    if unset.any():
        mag = wmax.amax(1)
        first_rng = torch.maximum(2 * mag, 0.25 * mag.max().expand_as(mag)).clamp_min(1e-6)
        rng = torch.where(unset, first_rng, rng)
        t["hist_range"][cols] = rng
    tv, order = _top(torch.cat([t["top_v"][cols], wmax], 1), k)
    old = t["top_i"][cols].gather(1, order.clamp(max=k - 1))
    t["top_v"][cols] = tv
    t["top_i"][cols] = torch.where(order >= k, token_index(order, k), old)
    bands, samples = t["q_key"].shape[1:]
    span = (rng - fire_threshold).clamp_min(1e-12).unsqueeze(1)
    fires = wmax > fire_threshold
    band = ((wmax - fire_threshold) / span * bands).floor().clamp(0, bands - 1).long()
    key = torch.rand(b, n, generator=gen).T
    for j in range(bands):
        kj = torch.where(fires & (band == j), key, float("-inf"))
        kk, order = _top(torch.cat([t["q_key"][cols, j], kj], 1), samples)
        old = t["q_i"][cols, j].gather(1, order.clamp(max=samples - 1))
        t["q_key"][cols, j] = kk
        t["q_v"][cols, j] = torch.cat([t["q_v"][cols, j], wmax], 1).gather(1, order)
        t["q_i"][cols, j] = torch.where(order >= samples, token_index(order, samples), old)
    bins = t["hist"].shape[1]
    scale = bins / (2 * rng)
    zero_q = rng * scale
    sampled = pos % state.hist_every == 0
    us, vs = unit[sampled], val[sampled]
    idx = torch.addcmul(zero_q[us], vs, scale[us]).clamp_(0, bins - 0.5).long() + us * bins
    hist = torch.bincount(idx, minlength=n * bins).view(n, bins)
    n_sampled = b * len(range(0, W, state.hist_every))
    zeros = n_sampled - torch.bincount(us, minlength=n)
    hist.scatter_add_(1, zero_q.clamp(0, bins - 0.5).long().unsqueeze(1), zeros.unsqueeze(1))
    t["hist"][cols] += hist
    fired = torch.bincount(unit[val > fire_threshold], minlength=n)
    if fire_threshold < 0:     # zeros are above the threshold too
        fired = fired + (b * W - torch.bincount(unit, minlength=n))
    t["n_fire"][cols] += fired
    v64 = val.double()
    t["s1"][cols] += torch.zeros(n, dtype=torch.float64).index_add_(0, unit, v64)
    t["s2"][cols] += torch.zeros(n, dtype=torch.float64).index_add_(0, unit, v64 * v64)



def fold_sparse(state: Any, sub: Any, cols: Any, value: torch.Tensor, window0: int, fire_threshold: float,
                gen: torch.Generator) -> bool:
    """Fold dictionary features' activations of one batch (``value``: their component, ``[batch, W, d]``) into
    ``state`` from their non-zero entries; ``False`` (nothing folded) when a code has negative values."""
    x = (value.reshape(*value.shape[:2], -1) if value.ndim == 4 else value).float()
    found = []
    for g in sub.groups:
        f = g.dictionary.encode(x)
        if not (len(g.index) == f.shape[-1] and bool((g.index == torch.arange(f.shape[-1])).all())):
            f = f[..., g.index.to(f.device)]
        nz = f.nonzero()                                       # [m, 3]: window, position, feature
        vals = f[nz[:, 0], nz[:, 1], nz[:, 2]].cpu()
        if bool((vals < 0).any()):                            # not a non-negative code: the dense fold
            return False
        nz = nz.cpu()
        found.append((nz[:, 0], nz[:, 1], torch.tensor(g.columns, dtype=torch.long)[nz[:, 2]], vals))
    win, pos, unit, val = (torch.cat([p[i] for p in found]) for i in range(4))
    update_sparse(state, cols, (x.shape[0], x.shape[1], sub.size), win, pos, unit, val, window0, fire_threshold, gen)
    return True


__all__ = ["fold_sparse", "update_sparse"]
