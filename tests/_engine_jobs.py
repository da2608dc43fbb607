"""Slow jobs for the engine's fault tests (imported by Ray workers by name), and a driver script
the tests start as a process and kill.

``SLOW`` is the activation job kind with a pause in every shard, long enough to kill a process
mid-shard, and a marker file ``start-<shard>-<pid>`` written as each shard starts, so the test
knows which process holds which shard. Its stores are those of ``activations`` (same plan).
``SLOW_MINE`` is the same for mining (``il.maximize``'s corpus pass; same folder as ``mine``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from interpretlm.maximization.sharded import MineJob
from interpretlm.probing.store import ActivationsJob


class SlowActivations(ActivationsJob):
    name = "_engine_jobs:SLOW"
    verb = "slow_activations"

    def plan(self, lm: Any, args: dict[str, Any]) -> dict[str, Any]:
        plan = super().plan(lm, args)
        plan["markers"], plan["delay"] = args["markers"], float(args["delay"])
        return plan

    def compute(self, lm: Any, plan: dict[str, Any], args: dict[str, Any]) -> Any:
        k = args["rows"][0] // plan["manifest"]["shard_size"]
        Path(plan["markers"], f"start-{k}-{os.getpid()}").touch()
        time.sleep(plan["delay"])
        return super().compute(lm, plan, args)


SLOW = SlowActivations()


class SlowMine(MineJob):
    name = "_engine_jobs:SLOW_MINE"

    def plan(self, lm: Any, args: dict[str, Any]) -> dict[str, Any]:
        args = dict(args)
        markers, delay = args.pop("markers"), float(args.pop("delay"))
        plan = super().plan(lm, args)
        plan["markers"], plan["delay"] = markers, delay
        return plan

    def compute(self, lm: Any, plan: dict[str, Any], args: dict[str, Any]) -> Any:
        k = args["windows"][0] // plan["shard_windows"]
        Path(plan["markers"], f"start-{k}-{os.getpid()}").touch()
        time.sleep(plan["delay"])
        return super().compute(lm, plan, args)


SLOW_MINE = SlowMine()
MINE_OPTIONS = dict(k=3, window=8, batch_size=4, checkpoint_every=8, detail=1)


def texts(n: int) -> list[str]:
    return [f"When Mary and John went to the store {i}, John gave a drink to" for i in range(n)]


def mine_units() -> Any:
    import interpretlm as il

    return il.Unit.all("blocks.1.mlp.neurons")


if __name__ == "__main__":   # python _engine_jobs.py ADDRESS MODEL STORE MARKERS N_TEXTS [mine]
    import ray

    from interpretlm.engine.ray_engine import RayEngine

    address, model, store, markers, n = sys.argv[1:6]
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    engine = RayEngine(num_workers=2, runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    if sys.argv[6:] == ["mine"]:
        engine.run(SLOW_MINE, model, dict(units=mine_units(), corpus=texts(int(n)), path=store, markers=markers,
                                          delay=1.0, **MINE_OPTIONS))
    else:
        engine.run(SLOW, model, dict(texts=texts(int(n)), components="resid_post", shard_size=2, batch_size=2,
                                     path=store, markers=markers, delay=1.0))
