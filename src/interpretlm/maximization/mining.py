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

from ..progress import bar as progress_bar
from ..shard_store import (finished_shards, holds_files, load_shard, read_manifest, record_shard, remove_partial,
                           write_shard)
from ..units import BoundUnits, kind_of, layer_of, unit_values
from .mining_state import GLU_COMBOS, MiningError, MiningState
from .sparse import fold_sparse
from .corpus import Corpus, CorpusError

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
        if holds_files(folder):
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
