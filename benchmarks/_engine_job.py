"""One activation job in a fresh process, for ``engine.py --whole-process``: what a user's script pays.

    python _engine_job.py local|ray MODEL N_TEXTS SHARD_SIZE PATH [RAY_ADDRESS]

Prints one JSON line: seconds to import interpretlm, to connect (Ray), the job, and the whole process
(from the interpreter's start, so Python's own start is included).
"""

from __future__ import annotations

import json
import sys
import time

t_start = time.time()
import interpretlm as il  # noqa: E402

t_import = time.time()
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from engine import corpus  # noqa: E402

mode, model, n, shard, path = sys.argv[1:6]
texts = corpus(int(n))
out = {"import": t_import - t_start}
if mode == "ray":
    t = time.time()
    eng = il.engine.ray(address=sys.argv[6], num_workers=2)   # a running cluster (ray start), as in production
    out["connect"] = time.time() - t
    engine = eng
else:
    from interpretlm.runtime import use_free_cores

    use_free_cores()   # as the same-process benchmark and the command line do (Ray's workers: 1 thread each)
    engine = "local"
t = time.time()
il.activations(model, texts, "resid_post", path=path, shard_size=int(shard), batch_size=8, engine=engine)
out["job"] = time.time() - t
if mode == "ray":
    out["start_workers"] = eng.timings["start_workers"]
    out["worker_phases"] = eng.worker_timings
print(json.dumps(out))
