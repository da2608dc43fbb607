"""Mining as a sharded job kind (:mod:`interpretlm.jobs`): ``il.maximize(spec, units, corpus=..., path=...,
engine="ray")`` mines shards of the corpus on workers and merges them into the folder the local pass writes.

A mining pass folds every window into a fixed-size state (:class:`~.mining_state.MiningState`) whose parts merge:
top-k windows and the quantile reservoirs keep the best of two states (ties to the earlier window), counts,
histograms and sums add, and the histogram's range (which the reservoir's bands divide) is fixed by the
corpus's first batch. So the steps are:

* ``plan`` (on a worker, which has the model): the local method's checks, the request's manifest (the same
  config, fingerprint and shards of ``checkpoint_every`` windows rounded up to whole batches, so the
  batches and their random priorities are the local pass's), the histogram range from the first batch,
  and a cursor into the corpus where each shard starts;
* ``compute``: a fresh state of the shard's windows, streamed from its cursor; ``write``: the state as
  ``shard-NNNNN.safetensors`` through the store (:mod:`interpretlm.shard_store`, atomically);
* ``record`` (the driver): lists the shard in the manifest, as the activation store does; the folder is
  the local pass's (the same shards, byte for byte), so either engine resumes the other's;
* ``finish`` (on a worker): the registered method on the finished folder: it reads no window again (it
  merges the shards' states in corpus order), and recomputes the detailed units' examples and logit
  effects as the local call does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from ..jobs import EngineError, JobKind
from ..registry import check_options as check_option_names, method as registered_method
from ..shard_store import record_shard
from ..units import Unit, bind_units
from .corpus import Corpus, corpus as as_corpus
from .mine import check_options
from .mining import MiningError, folding, new_state, open_folder, pass_request, shard_entry, shard_rows


class MineJob(JobKind):
    """``mine`` (top-k windows, quantile samples, histograms of units over a corpus) as a sharded job."""

    name = "mine"
    verb = "maximize"
    method = "mine"
    engine_args = ("path", "progress")
    finish_on_worker = True

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
                               glu_split=opts["glu_split"], seed=opts["seed"], max_windows=opts["max_windows"],
                               checkpoint_every=opts["checkpoint_every"])
        n, batch = request["n_windows"], opts["batch_size"]
        per = request["manifest"]["shard_windows"]
        # the histogram's range (and the reservoir's bands) come from the first batch: every shard starts with it
        state = new_state(bound, request)
        with folding(lm, bound, request["glu_units"], float(opts["fire_threshold"]), opts["seed"]) as fold:
            fold(state, list(islice(c.windows(lm.tokenizer, opts["window"]), min(batch, n))), 0)
        return {"manifest": request["manifest"], "shard_windows": per,
                "units": [u.to_dict() for u in bound.units], "glu_units": request["glu_units"],
                "hist_range": state.t["hist_range"].tolist(),
                "args": {"corpus": c.to_dict(), "cursors": c.cursors(lm.tokenizer, opts["window"], per, n),
                         "shard_windows": per, "request": dict(args), "passes": 0, "seconds": 0.0}}

    def shard_rows(self, plan: dict[str, Any]) -> list[tuple[int, int]]:
        return shard_rows(plan["manifest"])

    def shard_args(self, args: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
        cursors, per = args["cursors"], args["shard_windows"]
        k = lo // per
        doc, offset = cursors[k]
        corpus = dict(args["corpus"])
        if corpus["kind"] == "texts":   # a job carries its own documents only, not the whole corpus
            end = cursors[k + 1][0] + 1 if k + 1 < len(cursors) else len(corpus["texts"])
            corpus["texts"] = corpus["texts"][doc:end]
            doc = 0
        return {"corpus": corpus, "cursor": [doc, offset], "windows": [lo, hi]}

    # ------------------------------------------------------------------ the folder (the driver)
    def prepare(self, path: str | os.PathLike, plan: dict[str, Any], overwrite: bool) -> list[int]:
        m = open_folder(Path(path), plan["manifest"])
        return [k for k in range(m["n_shards"]) if str(k) not in m["shards"]]

    def compute(self, lm: Any, plan: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        m = plan["manifest"]
        bound = bind_units(lm, [Unit.from_dict(u) for u in plan["units"]])
        state = new_state(bound, {"manifest": m, "glu_units": plan["glu_units"]})
        state.t["hist_range"] = torch.tensor(plan["hist_range"], dtype=torch.float32)
        lo, hi = args["windows"]
        stream = islice(Corpus.from_dict(args["corpus"]).windows(lm.tokenizer, m["window"], start=args["cursor"]),
                        hi - lo)
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
        return {"tensors": state.tensors(), "windows": [lo, hi], "passes": passes, "seconds": time.perf_counter() - t0}

    def write(self, path: str | os.PathLike, plan: dict[str, Any], k: int, payload: dict[str, Any]) -> dict[str, Any]:
        entry = shard_entry(Path(path), k, payload["tensors"], tuple(payload["windows"]))
        return dict(entry, passes=payload["passes"], seconds=payload["seconds"])

    def record(self, path: str | os.PathLike, plan: dict[str, Any], k: int, entry: dict[str, Any]) -> None:
        plan["args"]["passes"] += entry.pop("passes")
        plan["args"]["seconds"] += entry.pop("seconds")
        record_shard(path, plan["manifest"], k, entry)

    def finish(self, path: str | os.PathLike, plan: dict[str, Any], computed: Sequence[int], lm: Any = None) -> Any:
        """On a worker: the registered method on the finished folder (no window is read again)."""
        request = dict(plan["args"]["request"])
        units = request.pop("units")
        result = self.local(lm, units, path=os.fspath(path), **request)
        result.diagnostics["forward_passes"] += plan["args"]["passes"]
        result.diagnostics["seconds"] += plan["args"]["seconds"]
        return result

    def release(self, path: str | os.PathLike) -> None:
        """Nothing to forget: the folder's manifest is the whole of the driver's state."""


__all__ = ["MineJob"]
