"""One activation job in a fresh process, for ``engine.py``'s whole-process pairs: what a user's script pays.

    python _engine_job.py local|ray MODEL N_TEXTS SHARD_SIZE PATH [RAY_ADDRESS [NUM_WORKERS]]

NUM_WORKERS: the Ray engine's actors (default: its own choice, ``RayEngine.worker_count``).

Prints one JSON line of wall-clock stamps and seconds: when the process started (from /proc) and
when this script ended (``process_start``, ``end``: the caller adds Python's start-up before them
and the exit after), ``python`` (interpreter start-up to this script's first line), ``import``
(interpretlm, torch included), ``connect`` (Ray: import ray, join the cluster), ``job``, and the
engine's own breakdown of the job (``timings``; Ray: ``worker_phases``, one per worker).
"""

from __future__ import annotations

import json
import sys
import time

t_start = time.time()
import interpretlm as il  # noqa: E402

t_import = time.time()
from interpretlm.engine.ray_engine import _process_start  # noqa: E402 (reads /proc; imports no Ray)

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from engine import corpus  # noqa: E402

mode, model, n, shard, path = sys.argv[1:6]
texts = corpus(int(n))
start = _process_start()
out = {"process_start": start, "python": t_start - start, "import": t_import - t_start}
if mode == "ray":
    t = time.time()
    workers = int(sys.argv[7]) if len(sys.argv) > 7 else None
    engine = il.engine.ray(address=sys.argv[6], num_workers=workers)   # a running cluster (ray start), as in production
    out["connect"] = time.time() - t
else:
    from interpretlm.runtime import use_free_cores

    use_free_cores()   # as the command line does: torch threads = free cores (Ray: 1 thread a worker, 1 worker a free core)
    engine = il.engine.local()
t = time.time()
il.activations(model, texts, "resid_post", path=path, shard_size=int(shard), batch_size=8, engine=engine)
out["job"] = time.time() - t
out["timings"] = dict(engine.timings)
if mode == "ray":
    out["worker_phases"] = engine.worker_timings
else:
    import torch

    out["threads"] = torch.get_num_threads()
out["end"] = time.time()
print(json.dumps(out))
