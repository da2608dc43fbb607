"""The state one mining pass keeps for every unit: top-k windows, quantile bands with their samples,
activation histograms, firing counts and, for gated MLPs, the four gate x up sign combinations,
folded in batch after batch on the tensor side and merged across shards in corpus order.
"""

from __future__ import annotations

import torch

from ..errors import InterpretLMError

GLU_COMBOS = ("gate+ up+", "gate+ up-", "gate- up+", "gate- up-")


class MiningError(InterpretLMError, ValueError):
    """A mining request that cannot run (k larger than the corpus, a resumed folder of another request...)."""


class MiningState:
    """The fixed-size running state of a mining pass (see the module docstring).

    Tensors (``n`` units, ``g`` gated-neuron units), units first so each unit's entries are contiguous
    and a component's units (a range of columns) are a view:
        top_v / top_i: ``[n, k]`` window maxima and their global token index (window * W + pos), best first.
        q_key / q_v / q_i: ``[n, bands, samples]`` reservoir priorities, values and token indices.
        hist: ``[n, bins]`` counts; hist_range: ``[n]`` half-width of the histogram's range.
        n_fire: ``[n]`` tokens above the firing threshold; s1 / s2: ``[n]`` sums of values and squares.
        glu_key / glu_v / glu_i: ``[g, 4, k]`` per sign combination, top windows by magnitude (glu_i: the window).
        glu_n: ``[g, 4]`` tokens per sign combination.
    """

    def __init__(self, n: int, g: int, k: int, bands: int, samples: int, bins: int, hist_every: int = 4) -> None:
        ninf = float("-inf")
        self.hist_every = hist_every
        # buffers the fold writes its [batch, W, n] temporaries into, reused batch after batch: a fresh tensor of
        # that size is new memory, which the kernel maps and zeroes page by page (slow on a loaded machine)
        self._scratch: dict[tuple, torch.Tensor] = {}
        self.t: dict[str, torch.Tensor] = {
            "top_v": torch.full((n, k), ninf), "top_i": torch.full((n, k), -1, dtype=torch.long),
            "q_key": torch.full((n, bands, samples), ninf), "q_v": torch.zeros(n, bands, samples),
            "q_i": torch.full((n, bands, samples), -1, dtype=torch.long),
            "hist": torch.zeros(n, bins, dtype=torch.long), "hist_range": torch.zeros(n),
            "n_fire": torch.zeros(n, dtype=torch.long), "s1": torch.zeros(n, dtype=torch.float64),
            "s2": torch.zeros(n, dtype=torch.float64),
            "glu_key": torch.full((g, 4, k), ninf), "glu_v": torch.zeros(g, 4, k),
            "glu_i": torch.full((g, 4, k), -1, dtype=torch.long), "glu_n": torch.zeros(g, 4, dtype=torch.long),
            "counters": torch.zeros(2, dtype=torch.long),   # windows done, tokens seen
        }

    def _buf(self, name: str, shape: torch.Size, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        key = (name, tuple(shape), dtype)
        if key not in self._scratch:
            self._scratch[key] = torch.empty(shape, dtype=dtype)
        return self._scratch[key]

    @property
    def windows_done(self) -> int:
        return int(self.t["counters"][0])

    @property
    def n_tokens(self) -> int:
        return int(self.t["counters"][1])

    # ------------------------------------------------------------------ updates
    @staticmethod
    def _token_index(v: torch.Tensor, order: torch.Tensor, base: int, window0: int,
                     units: torch.Tensor, argmax: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[r, m]`` the global token index of the entries ``order`` took from this batch (``order >= base``;
        -1 elsewhere) for the units ``units [r]`` (columns of ``v``). Few entries (once the top-k filled): the
        position of the window's maximum is found for them only; many (the first batches, where every window
        enters): every window's at once (``v.max(1)``, kept in ``argmax`` for the batch's other calls), which
        is then cheaper than gathering them. Both give the first position of the maximum."""
        b, W, n = v.shape
        out = torch.full_like(order, -1)
        new = order >= base
        if new.any():
            u, j = new.nonzero(as_tuple=True)
            w = order[u, j] - base
            if len(u) * 8 > b * n:
                if "pos" not in argmax:
                    argmax["pos"] = v.max(1).indices                   # [b, n]
                pos = argmax["pos"][w, units[u]]
            else:
                pos = v[w, :, units[u]].argmax(-1)       # [n_new, W] rows: one window of one unit each
            out[u, j] = (window0 + w) * W + pos
        return out

    def update(self, cols: "slice | torch.Tensor", v: torch.Tensor, window0: int, fire_threshold: float,
               gen: torch.Generator, wmax: torch.Tensor | None = None) -> None:
        """Fold ``v [batch, W, n_c]`` (the units at rows ``cols`` of the state) of windows ``window0...`` in.

        ``wmax``: ``[batch, n_c]`` the windows' maxima when already known (:meth:`update_glu` returns them).
        """
        t = self.t
        b, W, n = v.shape
        k = t["top_v"].shape[1]
        wmax = (v.amax(1) if wmax is None else wmax).T                          # [n, b]
        # the histogram's per-unit range, fixed by the first batch (the reservoir's bands divide it too)
        flat = v.reshape(b * W, n)
        rng = t["hist_range"][cols]
        unset = rng == 0
        if unset.any():
            mag = flat.abs().amax(0)
            first = torch.maximum(2 * mag, 0.25 * mag.max().expand_as(mag)).clamp_min(1e-6)
            rng = torch.where(unset, first, rng)
            t["hist_range"][cols] = rng
        # top-k windows: the k best of the current k and this batch's windows, ties to the earliest window.
        # Only units with a window above their k-th value change (few once the first batches filled the
        # top-k), so only their rows are sorted: the same result as sorting all, at a fraction of the cost
        at = _rows_of(cols, n)
        argmax: dict[str, torch.Tensor] = {}     # every window's argmax, when many are needed (_token_index)
        top_v = t["top_v"][cols]          # a view when cols is a slice
        units = _entering(wmax, top_v[:, -1:])
        if len(units):
            at_u = at[units]
            tv, order = _top(torch.cat([top_v[units], wmax[units]], 1), k)
            old = t["top_i"][at_u].gather(1, order.clamp(max=k - 1))
            t["top_v"][at_u] = tv
            t["top_i"][at_u] = torch.where(order >= k, self._token_index(v, order, k, window0, units, argmax), old)
        # stratified reservoir of windows, by band of the unit's range above the threshold: a window's band
        # depends on its own maximum only (not on the windows seen before it), so the reservoirs of two
        # parts of the corpus merge into the reservoir of the whole (engines mine shards in parallel)
        bands, samples = t["q_key"].shape[1:]
        span = (rng - fire_threshold).clamp_min(1e-12).unsqueeze(1)            # [n, 1]
        fires = wmax > fire_threshold
        band = ((wmax - fire_threshold) / span * bands).floor().clamp(0, bands - 1).long()
        key = torch.rand(b, n, generator=gen).T
        # every (unit, band) row at once: a window's priority in its own band, -inf in the others; only the
        # rows where some priority beats the band's last kept one are sorted (a band's rows are independent)
        in_band = band.unsqueeze(1) == torch.arange(bands).view(1, bands, 1)             # [n, bands, b]
        kall = torch.where(fires.unsqueeze(1) & in_band, key.unsqueeze(1), float("-inf"))
        units, j = (~(kall <= t["q_key"][cols][:, :, -1:])).any(2).nonzero(as_tuple=True)
        if len(units):
            at_u = at[units]
            kk, order = _top(torch.cat([t["q_key"][at_u, j], kall[units, j]], 1), samples)
            old = t["q_i"][at_u, j].gather(1, order.clamp(max=samples - 1))
            t["q_key"][at_u, j] = kk
            t["q_v"][at_u, j] = torch.cat([t["q_v"][at_u, j], wmax[units]], 1).gather(1, order)
            t["q_i"][at_u, j] = torch.where(order >= samples,
                                            self._token_index(v, order, samples, window0, units, argmax), old)
        # histogram over every `hist_every`-th token of a window (a systematic sample: one bincount over
        # [b * W / hist_every, n] instead of [b * W, n])
        bins = t["hist"].shape[1]
        sample = v[:, ::self.hist_every].reshape(-1, n)
        q = self._buf("hist_q", sample.shape)
        torch.addcmul(rng * (bins / (2 * rng)), sample, bins / (2 * rng), out=q)   # (x + r) * bins / 2r
        q.clamp_(0, bins - 0.5)
        idx = self._buf("hist_idx", sample.shape, torch.long).copy_(q)    # the copy truncates, as .long()
        idx += torch.arange(n).unsqueeze(0) * bins
        t["hist"][cols] += torch.bincount(idx.flatten(), minlength=n * bins).view(n, bins)
        t["n_fire"][cols] += _count(torch.gt(flat, fire_threshold, out=self._buf("fires", flat.shape, torch.bool)))
        t["s1"][cols] += flat.sum(0).double()
        t["s2"][cols] += torch.mul(flat, flat, out=self._buf("squares", flat.shape)).sum(0).double()

    def update_glu(self, gcols: "slice | torch.Tensor", v: torch.Tensor, gate: torch.Tensor, up: torch.Tensor,
                   window0: int) -> torch.Tensor:
        """Per gate × up sign combination: token counts and the top windows by ``|value|``.

        ``v``, ``gate``, ``up``: ``[batch, W, g_c]`` for the gated-neuron units at GLU rows ``gcols``.
        The counts read the signs of gate and up. The windows' maxima read the value's sign within
        each gate sign (``act(gate)`` has the sign of gate for SiLU and GELU, so a positive value under
        gate < 0 is ``up < 0``): four max/min reductions instead of a scatter; the token is found again
        when the examples are recomputed. Returns ``[batch, g_c]`` the windows' maxima of ``v``.
        """
        t = self.t
        b, W, n = v.shape
        k = t["glu_key"].shape[2]
        # bool: one byte a token for the counts below
        g_neg = torch.lt(gate, 0, out=self._buf("g_neg", gate.shape, torch.bool))
        u_neg = torch.lt(up, 0, out=self._buf("u_neg", up.shape, torch.bool))
        n_g, n_u = _count(g_neg), _count(u_neg)
        n_gu = _count(torch.logical_and(g_neg, u_neg, out=u_neg))
        total = b * W
        t["glu_n"][gcols] += torch.stack([total - n_g - n_u + n_gu, n_u - n_gu, n_g - n_gu, n_gu], 1).long()   # GLU_COMBOS
        under_neg = self._buf("under_neg", v.shape).copy_(g_neg).mul_(v)    # the values under gate < 0, 0 elsewhere
        under_pos = torch.sub(v, under_neg, out=self._buf("under_pos", v.shape))
        pos_max, neg_max = under_pos.amax(1), under_neg.amax(1)
        wval = torch.stack([pos_max, under_pos.amin(1), under_neg.amin(1), neg_max], 2)   # [b, n, 4]
        wval = wval.permute(1, 2, 0)                                             # [n, 4, b]
        sign = torch.tensor([1.0, -1.0, -1.0, 1.0]).view(1, 4, 1)
        wkey = torch.where(wval * sign > 0, wval.abs(), float("-inf"))          # -inf: no such token
        at = _rows_of(gcols, n)
        # every (unit, combination) row at once; only the rows with a window entering them are sorted
        units, c = (~(wkey <= t["glu_key"][gcols][:, :, -1:])).any(2).nonzero(as_tuple=True)
        if len(units):
            at_u = at[units]
            kk, order = _top(torch.cat([t["glu_key"][at_u, c], wkey[units, c]], 1), k)
            widx = torch.arange(window0, window0 + b).expand(len(units), b)
            t["glu_key"][at_u, c] = kk
            t["glu_v"][at_u, c] = torch.cat([t["glu_v"][at_u, c], wval[units, c]], 1).gather(1, order)
            t["glu_i"][at_u, c] = torch.cat([t["glu_i"][at_u, c], widx], 1).gather(1, order)
        # the windows' maxima, which update() needs too: the larger of the two when positive; a window whose
        # values are all <= 0 needs its own max (the zero fill hides it), read only for the units concerned
        wmax = torch.maximum(pos_max, neg_max)
        bad = (wmax <= 0).any(0).nonzero().flatten()
        if len(bad):
            wmax[:, bad] = v[:, :, bad].amax(1)
        return wmax

    # ------------------------------------------------------------------ merging
    def merge(self, other: "MiningState") -> None:
        """Fold in ``other``, the state of windows that all come after this state's: the state one pass over
        both gives (top-k windows and reservoirs: the best of both, ties to the earlier window; counts and
        sums: added; both must share the histogram range, which the first batch fixes).

        Example:
            >>> a, b = MiningState(2, 0, 1, 1, 1, 4), MiningState(2, 0, 1, 1, 1, 4)
            >>> a.t["top_v"][:, 0], b.t["top_v"][:, 0] = torch.tensor([1.0, 5.0]), torch.tensor([3.0, 2.0])
            >>> a.merge(b); a.t["top_v"].flatten().tolist()
            [3.0, 5.0]
        """
        t, o = self.t, other.t
        if bool((t["hist_range"] != 0).all()) and bool((o["hist_range"] != 0).all()) \
                and not torch.equal(t["hist_range"], o["hist_range"]):
            raise MiningError("Two mining states with different histogram ranges cannot be merged.")
        for name, value, index, dim in (("top_v", "top_v", ("top_i",), 1), ("q_key", "q_key", ("q_v", "q_i"), 2),
                                        ("glu_key", "glu_key", ("glu_v", "glu_i"), 2)):
            kk, order = _top(torch.cat([t[value], o[value]], dim), t[value].shape[dim])
            for f in index:
                t[f] = torch.cat([t[f], o[f]], dim).gather(dim, order)
            t[name] = kk
        for name in ("hist", "n_fire", "s1", "s2", "glu_n", "counters"):
            t[name] = t[name] + o[name]
        if not bool((t["hist_range"] != 0).all()):
            t["hist_range"] = torch.where(t["hist_range"] == 0, o["hist_range"], t["hist_range"])

    def canonical(self) -> "MiningState":
        """Clear the slots no window filled (their key is -inf; what they hold depends on the order the windows
        came in), so that states of the same windows are equal tensor for tensor however they were mined."""
        t = self.t
        for key, value, index in (("top_v", None, "top_i"), ("q_key", "q_v", "q_i"), ("glu_key", "glu_v", "glu_i")):
            empty = torch.isneginf(t[key])
            if value is not None:
                t[value] = t[value].masked_fill(empty, 0.0)
            t[index] = t[index].masked_fill(empty, -1)
        return self

    # ------------------------------------------------------------------ disk
    def tensors(self) -> dict[str, torch.Tensor]:
        """The state as contiguous tensors (what :meth:`save` writes)."""
        self.canonical()
        return {k: v.contiguous() for k, v in self.t.items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor], where: str = "a shard") -> "MiningState":
        """Take the tensors of a saved state (:meth:`tensors`, read back from a shard of the store)."""
        for k, v in tensors.items():
            if k not in self.t or self.t[k].shape != v.shape:
                raise MiningError(f"{where} does not fit this request; delete the folder to start over.")
            self.t[k] = v
        return self


def _count(mask: torch.Tensor) -> torch.Tensor:
    """``[n]`` int32: the True entries of ``mask [..., n]`` per last index. Summed as bytes over blocks of 255
    rows (a byte cannot overflow there), then the blocks as int32: a sum with ``dtype=int32`` (or
    ``count_nonzero``, int64) first converts the whole mask, a copy 4 (8) times its size.

    Example:
        >>> _count(torch.tensor([[True, False], [True, True]])).tolist()
        [2, 1]
    """
    x = mask.reshape(-1, mask.shape[-1]).view(torch.uint8)
    full = x.shape[0] // 255 * 255
    out = x[full:].sum(0, dtype=torch.int32)
    if full:
        out += x[:full].view(-1, 255, x.shape[1]).sum(1, dtype=torch.uint8).sum(0, dtype=torch.int32)
    return out


def _rows_of(cols: "slice | torch.Tensor", n: int) -> torch.Tensor:
    """``[n]`` the state rows a component's ``cols`` (a slice or indices) name."""
    return torch.arange(cols.start or 0, (cols.start or 0) + n) if isinstance(cols, slice) else cols


def _entering(new: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """The rows where some of ``new [r, m]`` would enter a best-first list whose last kept entry is
    ``last [r, 1]``: a value above it (an equal one loses to the earlier entry; NaN counts as entering,
    as the sort would place it)."""
    return (~(new <= last)).any(1).nonzero().flatten()


def _top(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest along the last dimension and where they were, ties to the earliest position (a stable
    sort, where ``topk`` leaves ties unspecified): so the same windows win however the corpus was split."""
    v, order = values.sort(dim=-1, descending=True, stable=True)
    return v[..., :k], order[..., :k]
