"""Top-activating corpus windows for many units in one streaming pass (``il.maximize(..., method="mine")``).

The corpus is streamed as windows of ``window`` tokens (:meth:`Corpus.windows`); each batch
runs the model once (stopped after the last block a unit reads) and every component's hook
turns its activation into unit values ``[batch, pos, n]`` and folds them into a fixed-size
state, on the tensor side (no Python loop over units):

* **top-k windows**: each window's maximum per unit, merged with the current top-k by one
  stable sort over ``[k + batch, n]`` (ties go to the earlier window), of the units with a
  window above their k-th value only (the same result; few units once the top-k filled);
* **quantile samples**: a stratified reservoir: windows whose maximum exceeds
  ``fire_threshold`` fall in one of ``bands`` equal bands between the threshold and the
  top of the unit's histogram range (windows above it in the top band) and get a random
  priority; each band keeps its ``samples`` highest priorities. A window's band depends on
  its own maximum only, not on the windows before it, so every part of the state merges
  (:meth:`MiningState.merge`): an engine mines shards of the corpus apart and folds them
  into the state one pass gives;
* **histogram** of the per-token values over ``bins`` bins per unit (range: twice the first
  batch's largest magnitude; the end bins also count values beyond it) over every
  ``hist_every``-th token of each window (a systematic sample that keeps the pass cheap), and
  over every token the mean, standard deviation and firing frequency (tokens with a value
  above ``fire_threshold``);
* **gated MLPs**: for neurons of a gated MLP (``down(act(gate(x)) * up(x))``), the four
  gate × up sign combinations (GLUScope) are kept apart: per combination the frequency and
  the top-k windows by magnitude, since a neuron reached through ``gate<0, up<0`` and one
  through ``gate>0, up>0`` are two mechanisms.

The state's size depends on the units and ``k``, never on the corpus length. The pass runs in
shards of ``checkpoint_every`` windows (whole batches): each shard folds into a state of its own,
merged into the pass's state when it ends, so a shard's state is the same whoever computes it. With
``path=`` the folder is a store of the core's :mod:`~interpretlm.shard_store`, the machinery of the
probing family's activation store (``il.activations``): each finished shard's state is written
atomically as ``shard-NNNNN.safetensors`` and only then listed in ``manifest.json`` with its windows
and sha256, under a fingerprint of the request. Running the same call again reads the finished
shards instead of their windows and recomputes at most the shard an interruption cut; the state it
ends with is the uninterrupted run's, tensor for tensor (the shards merge in corpus order either
way). ``il.maximize(..., engine="ray")`` computes the same shards on workers. After the pass, the
examples of the first ``detail`` units (top, quantile and sign-combination windows) are recomputed
token by token.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from ..errors import InterpretLMError
from ..progress import bar as progress_bar
from ..shard_store import finished_shards, load_shard, read_manifest, record_shard, remove_partial, write_shard
from ..units import BoundUnits, kind_of, layer_of, unit_values
from .sparse import fold_sparse
from .corpus import Corpus, CorpusError

GLU_COMBOS = ("gate+ up+", "gate+ up-", "gate- up+", "gate- up-")
STATE_FORMAT = 2   # 2: the folder is a store of shard states (1: one state of the first windows)
#: fold a block's values on a second thread while the forward pass runs the next blocks (:func:`folding`)
OVERLAP = True
#: the most blocks waiting to be folded: each holds its values (and gate/up projections) alive
_MAX_PENDING = 3


class _Folds:
    """Folds run in submission order, on one background thread (``overlap``) or at once in the caller."""

    def __init__(self, overlap: bool) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="interpretlm-fold") if overlap else None
        self.pending: deque[Future] = deque()

    @staticmethod
    def _run(fn: Any, args: tuple) -> None:
        with torch.inference_mode():   # what the hooks run under: the values are inference tensors
            fn(*args)

    def submit(self, fn: Any, *args: Any) -> None:
        if self.pool is None:
            fn(*args)
            return
        while len(self.pending) >= _MAX_PENDING:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._run, fn, args))

    def wait(self) -> None:
        """Block until every submitted fold ran; raise the first error one of them raised."""
        error = None
        while self.pending:
            try:
                self.pending.popleft().result()
            except BaseException as exc:   # noqa: BLE001 - every fold must end before the state is read
                error = error or exc
        if error is not None:
            raise error

    def close(self) -> None:
        if self.pool is not None:
            try:
                self.wait()
            finally:
                self.pool.shutdown(wait=True)


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


def _fingerprint(lm: Any, bound: BoundUnits, corpus: Corpus, config: dict[str, Any], names: list[str]) -> str:
    h = hashlib.sha256(json.dumps({"config": config, "corpus": corpus.identity(), "model": lm.fingerprint},
                                  sort_keys=True, default=str).encode())
    h.update("\n".join(names).encode())   # one update for thousands of units
    for u in bound.units:
        if u.direction is not None:
            h.update(u.direction.numpy().tobytes())
    return h.hexdigest()


def _glu_modules(lm: Any, layer: int) -> list[Any]:
    return lm.modules(f"blocks.{layer}.mlp_in")


def count_windows(corpus: Corpus, tokenizer: Any, window: int, limit: int | None = None) -> int:
    """How many windows of ``window`` tokens the corpus packs into (a tokenization pass, no model).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.maximization import corpus
        >>> count_windows(corpus(["the cat sat on the mat"] * 4), tiny_lm().tokenizer, 4) > 0
        True
    """
    n = 0
    for _ in corpus.windows(tokenizer, window):
        n += 1
        if limit is not None and n >= limit:
            break
    return n


def pass_request(lm: Any, bound: BoundUnits, corpus: Corpus, *, k: int, window: int, batch_size: int, bands: int,
                 samples: int, bins: int, hist_every: int, fire_threshold: float, glu_split: bool, seed: int,
                 max_windows: int | None, checkpoint_every: int) -> dict[str, Any]:
    """Check a mining request and describe it as plain data: the windows, the gated-neuron columns, the
    manifest of its folder (config and fingerprint). What the local pass and the engines' plan share.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.units import Unit, bind_units
        >>> from interpretlm.maximization import corpus
        >>> lm = tiny_lm("llama")
        >>> req = pass_request(lm, bind_units(lm, Unit("blocks.1.mlp.neurons", 3)), corpus(["the cat sat"] * 8),
        ...     k=2, window=4, batch_size=4, bands=2, samples=2, bins=8, hist_every=1, fire_threshold=0.0,
        ...     glu_split=True, seed=0, max_windows=None, checkpoint_every=8)
        >>> req["n_windows"] > 2, req["glu_units"]
        (True, [0])
    """
    tok = lm.tokenizer
    n_windows = count_windows(corpus, tok, window, max_windows)
    if n_windows == 0:
        raise CorpusError(f"The corpus is shorter than one window of {window} tokens; give more text or a smaller "
                          "window=.")
    if k > n_windows:
        raise MiningError(f"k={k} is larger than the corpus: it has {n_windows} windows of {window} tokens; "
                          "ask for fewer examples or give a longer corpus.")
    gated = bool(lm.family.gated_mlp) and glu_split
    glu_units: list[int] = []           # global columns of gated-neuron index units
    for g in bound.groups:
        if gated and g.how == "index" and kind_of(lm, g.component) == "mlp.neurons":
            glu_units += g.columns
    config = {"format": STATE_FORMAT, "k": k, "window": window, "batch_size": batch_size, "bands": bands,
              "samples": samples, "bins": bins, "hist_every": hist_every, "fire_threshold": fire_threshold,
              "glu_split": gated, "seed": seed, "n_windows": n_windows, "units": bound.size,
              "shard_windows": shard_windows(checkpoint_every, batch_size)}
    names = bound.names
    fingerprint = _fingerprint(lm, bound, corpus, config, names)
    per = shard_windows(checkpoint_every, batch_size)
    manifest = dict(config, fingerprint=fingerprint, model=lm.name, units_names=names[:50],
                    n_shards=math.ceil(n_windows / per), shards={})
    return {"n_windows": n_windows, "glu_units": glu_units, "manifest": manifest}


def new_state(bound: BoundUnits, request: dict[str, Any]) -> MiningState:
    """An empty :class:`MiningState` for a request of :func:`pass_request`."""
    m = request["manifest"]
    return MiningState(bound.size, len(request["glu_units"]), m["k"], m["bands"], m["samples"], m["bins"],
                       m["hist_every"])


@contextmanager
def folding(lm: Any, bound: BoundUnits, glu_units: list[int], fire_threshold: float, seed: int,
            overlap: bool | None = None):
    """Hooks that fold the units of each forward pass into a state; yields ``fold(state, batch, window0)``,
    which runs the model on ``batch`` (token windows numbered from ``window0``) and updates ``state``.

    The random priorities of a batch come from a generator seeded by ``seed`` and ``window0``, so a batch
    folds the same way whichever process runs it. With ``overlap`` (default :data:`OVERLAP`) a block's
    values are folded on a second thread while the forward pass runs the next blocks, in the order the
    hooks saw them (one thread: the random draws and the state are those of folding in the hooks);
    ``fold`` returns once the whole batch is folded.
    """
    comps = bound.components
    glu_pos = {c: i for i, c in enumerate(glu_units)}
    subs = {c: bound.subset(c) for c in comps}

    def as_index(cols: torch.Tensor) -> "slice | torch.Tensor":
        # a component's units are usually a range of rows: index by a slice (views, no copies)
        if len(cols) and bool((cols == torch.arange(int(cols[0]), int(cols[0]) + len(cols))).all()):
            return slice(int(cols[0]), int(cols[0]) + len(cols))
        return cols
    glu_cols = {c: (torch.tensor([j for j, col in enumerate(subs[c][1].tolist()) if col in glu_pos], dtype=torch.long),
                    torch.tensor([glu_pos[col] for col in subs[c][1].tolist() if col in glu_pos], dtype=torch.long))
                for c in comps}
    full_glu = {c: len(glu_cols[c][0]) == lm.d_mlp == subs[c][0].size
                and [u.index for u in subs[c][0].units] == list(range(lm.d_mlp)) for c in comps}
    until = max(0, max(layer_of(c) for c in comps))
    current: dict[str, Any] = {"state": None, "window0": 0, "gen": None}
    gate_up: dict[int, list[torch.Tensor]] = {}

    def reader(component: str):
        sub, cols = subs[component][0], as_index(subs[component][1])
        local, gcols = glu_cols[component][0], as_index(glu_cols[component][1])
        # dictionary features only: folded from their non-zero activations (a TopK dictionary's k of n a token)
        sparse = bool(sub.groups) and all(g.how == "feature" for g in sub.groups)

        def fold_layer(value: torch.Tensor, parts: list[torch.Tensor], state: MiningState, window0: int,
                       gen: torch.Generator) -> None:
            if sparse and fold_sparse(state, sub, cols, value, window0, fire_threshold, gen):
                return
            v = unit_values(lm, sub, {component: value}).float().cpu()
            wmax = None
            if len(local):
                parts = [p.float().cpu() for p in parts]
                gate, up = parts if len(parts) == 2 else parts[0].chunk(2, dim=-1)   # fused gate_up: halves
                if full_glu[component]:      # every neuron of the layer: no gathers, and the maxima are shared
                    wmax = state.update_glu(gcols, v, gate, up, window0)
                else:
                    idx = torch.tensor([sub.units[j].index for j in local.tolist()], dtype=torch.long)
                    state.update_glu(gcols, v[..., local], gate[..., idx], up[..., idx], window0)
            state.update(cols, v, window0, fire_threshold, gen, wmax)

        def read(value: torch.Tensor) -> None:
            # the model does not write to these tensors again (the MLP's product and projections are new
            # tensors), so the fold may read them while the forward pass goes on to the next blocks
            parts = list(gate_up.get(layer_of(component), ())) if len(local) else []
            background.submit(fold_layer, value.detach(), parts, current["state"], current["window0"],
                              current["gen"])
        return read

    def fold(state: MiningState, batch: list[list[int]], window0: int) -> None:
        current.update(state=state, window0=window0, gen=torch.Generator().manual_seed(seed * 1_000_003 + window0))
        try:
            with torch.inference_mode():
                lm.run(batch, until=until, head=False)
        finally:
            background.wait()   # every layer of the batch folded (also when the pass was interrupted)
        state.t["counters"] += torch.tensor([len(batch), len(batch) * len(batch[0])])

    handles = []
    background = _Folds(overlap if overlap is not None else OVERLAP)
    try:
        with ExitStack() as stack:
            stack.callback(background.close)
            if glu_units:
                for c in comps:
                    if len(glu_cols[c][0]):
                        layer = layer_of(c)
                        for i, mod in enumerate(_glu_modules(lm, layer)):
                            # gate then up (or one fused gate_up): read as the MLP computes them
                            def hook_fn(module, args, output, _layer=layer, _i=i):
                                if _i == 0:
                                    gate_up[_layer] = []
                                gate_up[_layer].append(output.detach())
                            handles.append(mod.register_forward_hook(hook_fn))
            for c in comps:
                stack.enter_context(lm.hook(c, read=reader(c)))
            yield fold
    finally:
        for h in handles:
            h.remove()


def shard_windows(checkpoint_every: int, batch_size: int) -> int:
    """Windows a shard of a mining folder covers: ``checkpoint_every`` rounded up to whole batches (so the
    batches, and their random priorities, are the same however the shards are run).

    Example:
        >>> shard_windows(10, 4)
        12
    """
    return math.ceil(checkpoint_every / batch_size) * batch_size


def shard_rows(manifest: dict[str, Any]) -> list[tuple[int, int]]:
    """``[(first window, end)]`` of every shard of a mining request's manifest."""
    n, per = manifest["n_windows"], manifest["shard_windows"]
    return [(k * per, min(n, (k + 1) * per)) for k in range(manifest["n_shards"])]


def open_folder(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Check a mining folder (a store of the core's :mod:`~interpretlm.shard_store`) against the request's
    ``manifest``; list in it the shards the folder holds, and return it."""
    old = read_manifest(folder)
    if old is None:
        if folder.exists() and any(folder.iterdir()):
            raise MiningError(f"{folder} exists and holds other files; give an empty or new folder.")
        return manifest
    if old.get("fingerprint") != manifest["fingerprint"]:
        raise MiningError(f"{folder} holds a mining pass of another request (other units, corpus, model or "
                          "options); use another path or delete it.")
    remove_partial(folder)
    done = set(finished_shards(folder, old))
    manifest["shards"] = {k: e for k, e in old["shards"].items() if int(k) in done}
    return manifest


def shard_entry(folder: Path, k: int, tensors: dict[str, torch.Tensor], windows: tuple[int, int]) -> dict[str, Any]:
    """Write shard ``k`` (the state of ``windows``, :meth:`MiningState.tensors`) through the store; its
    manifest entry."""
    lo, hi = windows
    entry = write_shard(folder, k, tensors, metadata={"windows": f"{lo}:{hi}"})
    return {"file": entry["file"], "windows": [lo, hi], "sha256": entry["sha256"]}


def run_pass(lm: Any, bound: BoundUnits, corpus: Corpus, *, k: int, window: int, batch_size: int, bands: int,
             samples: int, bins: int, hist_every: int, fire_threshold: float, glu_split: bool, path: str | None,
             checkpoint_every: int, seed: int, max_windows: int | None) -> tuple[MiningState, dict[str, Any]]:
    """Stream the corpus once through the model and fold every unit into a :class:`MiningState`.

    The pass runs shard by shard (:func:`shard_windows`): each shard's windows fold into a state of their
    own, merged into the pass's state when the shard ends. With ``path=`` every finished shard is written
    to the folder through the store (:mod:`interpretlm.shard_store`: atomically, then listed in the
    manifest), so an interrupted pass run again reads the shards it finished instead of their windows and
    recomputes at most the shard it was in; ``engine="ray"`` writes the same shards.
    Returns the state and facts of the pass (windows, GLU columns, seconds, forward passes).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.units import Unit, bind_units
        >>> from interpretlm.maximization import corpus
        >>> lm = tiny_lm("llama")
        >>> state, facts = run_pass(lm, bind_units(lm, Unit("blocks.1.mlp.neurons", 3)),
        ...     corpus(["the cat sat on the mat"] * 8), k=2, window=4, batch_size=4, bands=2, samples=2, bins=8,
        ...     hist_every=1, fire_threshold=0.0, glu_split=True, path=None, checkpoint_every=64, seed=0,
        ...     max_windows=None)
        >>> state.t["top_v"].shape, state.n_tokens == 4 * facts["n_windows"]
        (torch.Size([1, 2]), True)
    """
    request = pass_request(lm, bound, corpus, k=k, window=window, batch_size=batch_size, bands=bands,
                           samples=samples, bins=bins, hist_every=hist_every, fire_threshold=fire_threshold,
                           glu_split=glu_split, seed=seed, max_windows=max_windows, checkpoint_every=checkpoint_every)
    n_windows, glu_units, manifest = request["n_windows"], request["glu_units"], request["manifest"]
    folder = Path(path) if path is not None else None
    if folder is not None:
        manifest = open_folder(folder, manifest)
    rows = shard_rows(manifest)
    done = {int(key) for key in manifest["shards"]}
    state = new_state(bound, request)
    start = time.perf_counter()
    forward_passes = 0
    bar = progress_bar(n_windows, "mining", initial=sum(rows[j][1] - rows[j][0] for j in done))
    try:
        with folding(lm, bound, glu_units, fire_threshold, seed) as fold:
            stream = corpus.windows(lm.tokenizer, window) if len(done) < len(rows) else iter(())
            for j, (lo, hi) in enumerate(rows):
                part = new_state(bound, request)
                if j in done:                  # finished before an interruption, or by another engine
                    part.load_tensors(load_shard(folder, manifest["shards"][str(j)]), f"{folder}: shard {j}")
                    for _ in islice(stream, hi - lo):   # its windows are not read again
                        pass
                else:
                    # the histogram's range (which the reservoir's bands divide) is the first batch's
                    part.t["hist_range"] = state.t["hist_range"].clone()
                    w = lo
                    while w < hi:
                        batch = list(islice(stream, min(batch_size, hi - w)))
                        if not batch:
                            raise MiningError(f"The corpus ended after {w} windows where it had {n_windows}: it "
                                              "changed during the pass.")
                        fold(part, batch, w)
                        forward_passes += 1
                        w += len(batch)
                        bar.update(len(batch))
                    if folder is not None:
                        record_shard(folder, manifest, j, shard_entry(folder, j, part.tensors(), (lo, hi)))
                state.merge(part)
    finally:
        bar.close()
    state.canonical()
    facts = {"n_windows": n_windows, "glu_units": glu_units, "seconds": time.perf_counter() - start,
             "forward_passes": forward_passes}
    return state, facts


__all__ = ["GLU_COMBOS", "MiningError", "MiningState", "count_windows", "folding", "new_state", "open_folder",
           "pass_request", "run_pass", "shard_entry", "shard_rows", "shard_windows"]


# ---------------------------------------------------------------------- the registered method
def _plain_ex(tokens: list[str], values: torch.Tensor, pos: int) -> dict[str, Any]:
    return {"tokens": tokens, "values": [float(x) for x in values], "pos": int(pos), "max": float(values[pos])}


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MiningError(f"{name} must be a positive int; got {v!r}.")
