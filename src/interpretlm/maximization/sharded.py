"""Mining as a sharded job kind (:mod:`interpretlm.jobs`): ``il.maximize(spec, units, corpus=..., path=...,
engine="ray")`` mines shards of the corpus on workers and merges them into the folder the local pass writes.

A mining pass folds every window into a fixed-size state (:class:`~.mining.MiningState`) whose parts merge:
top-k windows and the quantile reservoirs keep the best of two states (ties to the earlier window), counts,
histograms and sums add, and the histogram's range (which the reservoir's bands divide) is fixed by the
corpus's first batch. So the steps are:

* ``plan`` (on a worker, which has the model): the local method's checks, the request's manifest (the same
  config and fingerprint), the histogram range from the first batch, and a cursor into the corpus where
  each shard of ``checkpoint_every`` windows (rounded up to whole batches, so the batches and their random
  priorities are the local pass's) starts;
* ``compute``: a fresh state of the shard's windows, streamed from its cursor; ``write``: the state as
  ``shard-NNNNN.safetensors`` (atomically);
* ``record`` (the driver): lists the shard in the manifest and folds every shard that continues the
  folder's state into ``state.safetensors`` in corpus order (then deletes it), so the folder always holds
  the local pass's format: the state of the first ``windows_done`` windows plus finished later shards,
  which the local pass also folds in when it reaches them (either engine resumes the other's folder);
* ``finish`` (on a worker): the registered method on the finished folder: it reads no window again, and
  recomputes the detailed units' examples and logit effects as the local call does.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from ..jobs import EngineError, JobKind
from ..registry import check_options as check_option_names, method as registered_method
from ..results import atomic_write
from ..units import Unit, bind_units
from .corpus import Corpus, corpus as as_corpus
from .mine import check_options
from .mining import MiningError, MiningState, folding, new_state, open_folder, pass_request, read_manifest, write_manifest


class MineJob(JobKind):
    """``mine`` (top-k windows, quantile samples, histograms of units over a corpus) as a sharded job."""

    name = "mine"
    verb = "maximize"
    method = "mine"
    engine_args = ("path", "progress")
    finish_on_worker = True

    def __init__(self) -> None:
        self._states: dict[str, Any] = {}   # the driver's open folders: path -> the state of their prefix

    @staticmethod
    def local(lm: Any, units: Any, method: str = "mine", **options: Any) -> Any:
        """``il.maximize`` in this process (its docstring is copied here when the package is imported)."""
        from . import maximize

        return maximize(lm, units, method, **options)

    def validate(self, values: dict[str, Any]) -> None:
        method = values.get("method", "mine")
        if method != "mine":
            raise EngineError(f"method={method!r} optimises inputs for one unit in one process; only 'mine' (a "
                              "pass over a corpus) runs on an engine. Use engine='local'.")

    # ------------------------------------------------------------------ plan (on a worker)
    def plan(self, lm: Any, args: dict[str, Any]) -> dict[str, Any]:
        options = {k: v for k, v in args.items() if k not in ("units", "method")}
        m = registered_method("mine")
        check_option_names(m, options)
        opts = {name: options.get(name, o.default) for name, o in m.options.items()}
        check_options(**opts)
        bound = bind_units(lm, args["units"])
        c = as_corpus(opts["corpus"])
        request = pass_request(lm, bound, c, k=opts["k"], window=opts["window"], batch_size=opts["batch_size"],
                               bands=opts["bands"], samples=opts["samples"], bins=opts["bins"],
                               hist_every=opts["hist_every"], fire_threshold=float(opts["fire_threshold"]),
                               glu_split=opts["glu_split"], seed=opts["seed"], max_windows=opts["max_windows"])
        n, batch = request["n_windows"], opts["batch_size"]
        per = math.ceil(opts["checkpoint_every"] / batch) * batch   # whole batches: the local pass's batches
        # the histogram's range (and the reservoir's bands) come from the first batch: every shard starts with it
        state = new_state(bound, request)
        with folding(lm, bound, request["glu_units"], float(opts["fire_threshold"]), opts["seed"]) as fold:
            fold(state, list(islice(c.windows(lm.tokenizer, opts["window"]), min(batch, n))), 0)
        return {"manifest": dict(request["manifest"], windows_done=0, shards={}), "shard_windows": per,
                "units": [u.to_dict() for u in bound.units], "glu_units": request["glu_units"],
                "hist_range": state.t["hist_range"].tolist(),
                "args": {"corpus": c.to_dict(), "cursors": c.cursors(lm.tokenizer, opts["window"], per, n),
                         "shard_windows": per, "request": dict(args), "passes": 0, "seconds": 0.0}}

    def shard_rows(self, plan: dict[str, Any]) -> list[tuple[int, int]]:
        m, per = plan["manifest"], plan["shard_windows"]
        n, done = m["n_windows"], m["windows_done"]
        rows = [(k * per, min(n, (k + 1) * per)) for k in range(math.ceil(n / per))]
        return [(min(max(lo, done), hi), hi) for lo, hi in rows]   # a resumed local prefix may end mid-shard

    def shard_args(self, args: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
        cursors, per = args["cursors"], args["shard_windows"]
        k = lo // per                        # lo is past the shard's start when a local prefix ends inside it
        doc, offset = cursors[k]
        corpus = dict(args["corpus"])
        if corpus["kind"] == "texts":   # a job carries its own documents only, not the whole corpus
            end = cursors[k + 1][0] + 1 if k + 1 < len(cursors) else len(corpus["texts"])
            corpus["texts"] = corpus["texts"][doc:end]
            doc = 0
        return {"corpus": corpus, "cursor": [doc, offset], "skip": lo - k * per, "windows": [lo, hi]}

    # ------------------------------------------------------------------ the folder (the driver)
    def prepare(self, path: str | os.PathLike, plan: dict[str, Any], overwrite: bool) -> list[int]:
        folder = Path(path)
        m = plan["manifest"]
        old = read_manifest(folder)
        if old is not None and old.get("fingerprint") != m["fingerprint"]:
            raise MiningError(f"{folder} holds a mining pass of another request (other units, corpus, model or "
                              "options); use another path or delete it.")
        state = self._empty(plan)
        shards = open_folder(folder, {"manifest": m}, state)
        m["windows_done"], m["shards"] = state.windows_done, shards
        self._states[os.fspath(path)] = state
        rows = self.shard_rows(plan)
        return [k for k, (lo, hi) in enumerate(rows) if hi > lo and str(k) not in shards]

    def compute(self, lm: Any, plan: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        m = plan["manifest"]
        bound = bind_units(lm, [Unit.from_dict(u) for u in plan["units"]])
        state = new_state(bound, {"manifest": m, "glu_units": plan["glu_units"]})
        state.t["hist_range"] = torch.tensor(plan["hist_range"], dtype=torch.float32)
        lo, hi = args["windows"]
        stream = islice(Corpus.from_dict(args["corpus"]).windows(lm.tokenizer, m["window"], start=args["cursor"]),
                        args["skip"], args["skip"] + hi - lo)
        batch, passes, w = [], 0, lo
        with folding(lm, bound, plan["glu_units"], float(m["fire_threshold"]), m["seed"]) as fold:
            for ids in stream:
                batch.append(ids)
                if len(batch) == m["batch_size"]:
                    fold(state, batch, w)
                    w, batch, passes = w + len(batch), [], passes + 1
            if batch:
                fold(state, batch, w)
                w, passes = w + len(batch), passes + 1
        if w != hi:
            raise MiningError(f"The corpus gave windows {lo}..{w} where the plan expected {lo}..{hi}: it changed "
                              "since the job was planned, or workers read another copy of it.")
        return {"tensors": state.tensors(), "windows": [lo, hi], "passes": passes,
                "seconds": time.perf_counter() - t0}

    def write(self, path: str | os.PathLike, plan: dict[str, Any], k: int, payload: dict[str, Any]) -> dict[str, Any]:
        from safetensors.torch import save_file

        fname = f"shard-{k:05d}.safetensors"
        atomic_write(Path(path) / fname, lambda tmp: save_file(payload["tensors"], tmp))
        return {"file": fname, "windows": payload["windows"], "passes": payload["passes"],
                "seconds": payload["seconds"]}

    def record(self, path: str | os.PathLike, plan: dict[str, Any], k: int, entry: dict[str, Any]) -> None:
        folder, m = Path(path), plan["manifest"]
        state = self._states[os.fspath(path)]   # the engine prepared the folder
        plan["args"]["passes"] += entry.pop("passes")
        plan["args"]["seconds"] += entry.pop("seconds")
        shards = m["shards"]
        shards[str(k)] = entry
        merged = []
        # fold, in corpus order, every finished shard that continues the state (the local pass's format)
        while True:
            nxt = next((s for s, e in shards.items() if e["windows"][0] == state.windows_done), None)
            if nxt is None:
                break
            e = shards.pop(nxt)
            state.merge(self._empty(plan).load(folder, e["file"]))
            merged.append(e["file"])
        base = {k2: v for k2, v in m.items() if k2 not in ("windows_done", "shards")}
        if merged:
            state.save(folder, base, shards)
            for f in merged:
                (folder / f).unlink(missing_ok=True)
        else:
            write_manifest(folder, base, state.windows_done, shards)
        m["windows_done"] = state.windows_done

    def finish(self, path: str | os.PathLike, plan: dict[str, Any], computed: Sequence[int], lm: Any = None) -> Any:
        """On a worker: the registered method on the finished folder (no window is read again)."""
        self._states.pop(os.fspath(path), None)
        request = dict(plan["args"]["request"])
        units = request.pop("units")
        result = self.local(lm, units, path=os.fspath(path), **request)
        result.diagnostics["forward_passes"] += plan["args"]["passes"]
        result.diagnostics["seconds"] += plan["args"]["seconds"]
        return result

    def release(self, path: str | os.PathLike) -> None:
        """Forget the driver's open state of ``path`` (after a job, or one that failed)."""
        self._states.pop(os.fspath(path), None)

    def _empty(self, plan: dict[str, Any]) -> MiningState:
        m = plan["manifest"]
        return MiningState(m["units"], len(plan["glu_units"]), m["k"], m["bands"], m["samples"], m["bins"],
                           m["hist_every"])


__all__ = ["MineJob"]
