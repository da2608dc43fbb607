"""Wall time of the Ray engine against the local engine for the same activation job.

Run by hand (not a test); it starts a local Ray cluster of ``--cpus`` CPUs:

    PYTHONPATH=src .venv/bin/python benchmarks/engine.py [--model smollm2-135m] [--texts 192] [--cpus 2]

Two comparisons, both on the same job (same texts, same store, compared byte for byte):

* **same process**: this process runs the local engine (the model loaded here; torch and
  transformers already imported, as in a notebook that has used interpretlm before), then the Ray
  engine, whose fresh workers import torch and transformers and load the model ("cold"), then
  the Ray engine again on the workers kept from that job ("kept");
* **whole process** (``--whole-process``, default on): a fresh ``python`` per job, timed from its
  start to its exit, as a user's script pays it: the local engine (imports, load, job), and the
  Ray engine connecting to the cluster already running (``ray start`` on a real cluster; here the
  one this process started), whose workers import and load in parallel with each other.

Both engines get the model as a load spec and write a store of every layer's ``resid_post``
(token level) to disk: the local engine loads the model in this process and runs the shards
one after the other with torch's threads; the Ray engine starts one actor per CPU, each loads
the model and runs shards with one thread. Printed: wall times, the ratio (goal <= 1.25), where
the Ray engine's time went (starting workers, planning, shards, opening the store), the
cluster's start (paid once per session, not per job), a second Ray job on the kept workers, and
the measured cost per token of the forward pass (for the README's paper estimate). Both stores
are compared byte for byte.

On a shared machine absolute times are noisy; the ratio is measured in one process, local and
Ray runs alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import interpretlm as il
from interpretlm.engine.ray_engine import RayEngine

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402


def corpus(n: int) -> list[str]:
    words = ("the cat sat on the mat while a dog in the park chased the ball that John threw to Mary "
             "after lunch because the weather was fine and everyone wanted to play outside").split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(24 + i % 9)) for i in range(n)]


def same(a: Path, b: Path) -> bool:
    return all((a / f.name).read_bytes() == f.read_bytes() for f in b.iterdir() if not f.name.startswith("."))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--texts", type=int, default=192)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--whole-process", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads of the local engine (0: the free cores, as the CLI and tests use)")
    args = ap.parse_args()
    import torch

    from interpretlm.runtime import use_free_cores

    # On a busy machine a 2-thread forward waits for its slower thread (see interpretlm.runtime);
    # the Ray workers run 1 thread each. --threads 2 measures torch's default instead.
    torch.set_num_threads(args.threads) if args.threads else use_free_cores()
    import ray

    from interpretlm.probing.store import ActivationStore  # noqa: F401 (the family is imported once, untimed)

    texts = corpus(args.texts)
    kw = dict(components="resid_post", shard_size=args.shard_size, batch_size=8)
    lm = il.load(args.model)
    n_tokens = int(lm.tokenize(texts).attention_mask.sum())
    del lm
    root = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    cluster_start = time.perf_counter() - t
    local_times, ray_times, timings, phases = [], [], [], []
    whole: dict[str, list[float]] = {"local": [], "ray": []}
    whole_facts: dict[str, dict] = {}
    try:
        for r in range(args.rounds):
            t = time.perf_counter()
            il.activations(args.model, texts, path=root / f"local{r}", engine="local", **kw)
            local_times.append(time.perf_counter() - t)
            eng = RayEngine(num_workers=args.cpus, keep_workers=True)
            t = time.perf_counter()
            il.activations(args.model, texts, path=root / f"ray{r}", engine=eng, **kw)
            ray_times.append(time.perf_counter() - t)
            timings.append(dict(eng.timings))
            phases.append(list(eng.worker_timings))
            t = time.perf_counter()
            il.activations(args.model, texts, path=root / f"warm{r}", engine=eng, **kw)
            warm = time.perf_counter() - t
            warm_timings = dict(eng.timings)
            eng.release()
            assert same(root / f"local{r}", root / f"ray{r}") and same(root / f"local{r}", root / f"warm{r}")
        if args.whole_process:
            address = ray.get_runtime_context().gcs_address
            for r in range(args.rounds):
                for mode in ("local", "ray"):
                    cmd = [sys.executable, str(Path(__file__).parent / "_engine_job.py"), mode, args.model,
                           str(args.texts), str(args.shard_size), str(root / f"whole-{mode}{r}"), address]
                    t = time.perf_counter()
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    whole[mode].append(time.perf_counter() - t)
                    whole_facts[mode] = json.loads(out.stdout.strip().splitlines()[-1])
                assert same(root / f"local{r}", root / f"whole-local{r}") and same(root / f"local{r}",
                                                                                    root / f"whole-ray{r}")
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    loc, far = min(local_times), min(ray_times)
    # The local engine's own time minus loading the model is the forward + write cost of the job.
    lm_t = time.perf_counter()
    il.load(args.model)
    load = time.perf_counter() - lm_t
    per_token = (loc - load) / n_tokens
    print(f"{args.texts} texts, {n_tokens} tokens, {args.model}, shards of {args.shard_size}, {args.cpus} CPUs")
    print(f"local engine (load + {torch_threads()} torch threads): {loc:.2f} s")
    print(f"ray engine ({args.cpus} actors x 1 thread), cold: {far:.2f} s   ratio {far / loc:.2f}  (goal <= 1.25)")
    print("  where the time went: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings[-1].items()))
    print(f"ray engine, workers kept from the job before: {warm:.2f} s   ratio {warm / loc:.2f}; "
          + ", ".join(f"{k} {v:.2f} s" for k, v in warm_timings.items()))
    print("  worker start by phase (s): " + "; ".join(", ".join(f"{k} {v:.2f}" for k, v in w.items())
                                                      for w in phases[-1]))
    print(f"cluster start (once per session, not in the figures above): {cluster_start:.2f} s")
    if args.whole_process:
        wl, wr = min(whole["local"]), min(whole["ray"])
        fl, fr = whole_facts["local"], whole_facts["ray"]
        print(f"whole process, local engine: {wl:.2f} s (import interpretlm {fl['import']:.2f} s, job {fl['job']:.2f} s)")
        print(f"whole process, ray engine (cluster running): {wr:.2f} s   ratio {wr / wl:.2f}  (import interpretlm "
              f"{fr['import']:.2f} s, connect {fr['connect']:.2f} s, job {fr['job']:.2f} s of which workers' start "
              f"{fr['start_workers']:.2f} s: " + "; ".join(", ".join(f"{k} {v:.2f}" for k, v in w.items())
                                                         for w in fr["worker_phases"]) + ")")
        record("engine", "whole_local_s", wl)
        record("engine", "whole_ray_s", wr)
        record("engine", "whole_ray_over_local", wr / wl)
    print(f"model load {load:.2f} s; forward + store cost {per_token * 1e3:.3f} ms/token on this machine "
          "(shared: absolute times are noisy)")
    record("engine", "local_s", loc)
    record("engine", "ray_cold_s", far)
    record("engine", "ray_over_local_cold", far / loc)
    record("engine", "ray_warm_s", warm)
    record("engine", "ray_over_local_warm", warm / loc)
    record("engine", "ms_per_token_135m_cpu", per_token * 1e3)
    record("engine", "texts", args.texts)
    record("engine", "tokens", n_tokens)
    record("engine", "load_average", os.getloadavg()[0])
    for phase in ("import", "load"):
        record("engine", f"worker_{phase}_s", max(w.get(phase, 0.0) for w in phases[-1]))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
