"""Wall time of the Ray engine against the local engine for the same activation job.

Run by hand (not a test); it starts a local Ray cluster of ``--cpus`` CPUs:

    PYTHONPATH=src .venv/bin/python benchmarks/engine.py [--texts 48,192] [--pairs 3] [--same-process]

**Whole process** (the figure that counts): for each job size, ``--pairs`` pairs of fresh
``python`` processes, one per engine, each timed from its start to its exit, as a user's script
pays it: the local engine imports interpretlm, loads the model and runs the job; the Ray driver
imports interpretlm, connects to the cluster already running (``ray start`` on a real cluster;
here the one this process started) and runs the job on fresh workers, which import interpretlm
and torch and load the model. The two runs of a pair alternate their order (local first, then
Ray first), so a drift of the machine's speed hits both; the ratio is taken pair by pair and
printed as median and range. Each process reports its stages (Python's start, imports, Ray's
connection, the workers' start by phase, shards, opening the store, exit), so the difference is
accounted for. From two job sizes the script fits ``wall = fixed + tokens x per-token`` for each
engine and prints the Ray engine's fixed overhead and the job size above which its wall time is
at most 1.25x the local engine's.

**Same process** (``--same-process``): this process runs the local engine (torch and
transformers already imported, as in a notebook), the Ray engine on fresh workers ("cold"), and
the Ray engine again on the workers kept from that job ("kept").

Both engines write a store of every layer's ``resid_post`` (token level); every store is compared
byte for byte with the first local one. On a shared machine absolute times are noisy; ratios
from alternating pairs are what to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import interpretlm as il
from interpretlm.engine.ray_engine import RayEngine

sys.path.insert(0, str(Path(__file__).parent))
from _results import record, target  # noqa: E402

GOAL = 1.25


def corpus(n: int) -> list[str]:
    words = ("the cat sat on the mat while a dog in the park chased the ball that John threw to Mary "
             "after lunch because the weather was fine and everyone wanted to play outside").split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(24 + i % 9)) for i in range(n)]


def same(a: Path, b: Path) -> bool:
    return all((a / f.name).read_bytes() == f.read_bytes() for f in b.iterdir() if not f.name.startswith("."))


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{med(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


def one_process(mode: str, args: argparse.Namespace, n: int, path: Path, address: str) -> dict[str, Any]:
    """Run one job in a fresh process; its facts plus ``wall`` (start to exit) and ``exit`` (after its last line)."""
    cmd = [sys.executable, str(Path(__file__).parent / "_engine_job.py"), mode, args.model, str(n),
           str(args.shard_size), str(path), address]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    t1 = time.time()
    if out.returncode:
        raise RuntimeError(f"{mode} job failed:\n{out.stderr[-3000:]}")
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    facts["wall"], facts["exit"] = t1 - t0, t1 - facts["end"]
    facts["spawn"] = facts["process_start"] - t0   # fork and exec (/proc's start is in clock ticks: ±0.01 s)
    return facts


def stages(f: dict[str, Any]) -> dict[str, float]:
    """One process's wall time by stage (seconds; they add up to its wall time)."""
    t = f["timings"]
    s = {"python start": f["spawn"] + f["python"], "import interpretlm": f["import"]}
    if "connect" in f:
        w = max(f["worker_phases"], key=lambda p: sum(p.values()))   # the slower worker
        s |= {"import ray + connect": f["connect"],
              "workers start (first ready)": t["start_workers"],
              "  of which worker import": w.get("import", 0.0), "  of which worker il.load": w.get("load", 0.0),
              "plan": t["plan"], "shards": t["shards"], "open the store": t["finish"]}
    else:
        s |= {"il.load": t["load"], "shards + open the store": t["job"]}
    # The rest of the script: building the texts, the verb's checks, Ray's bookkeeping between the stages.
    s["other"] = f["end"] - f["process_start"] - f["python"] - f["import"] - f.get("connect", 0.0) - sum(t.values())
    s["exit"] = f["exit"]
    return s


def whole_process(args: argparse.Namespace, n: int, root: Path, address: str, ref: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    ratios = []
    for i in range(args.pairs):
        pair = {}
        for mode in (("local", "ray") if i % 2 == 0 else ("ray", "local")):
            path = root / f"whole-{n}-{mode}{i}"
            pair[mode] = one_process(mode, args, n, path, address)
            assert same(ref, path), f"{mode} store differs"
            shutil.rmtree(path)
            runs[mode].append(pair[mode])
        ratios.append(pair["ray"]["wall"] / pair["local"]["wall"])
        print(f"  pair {i + 1}: local {pair['local']['wall']:.1f} s, ray {pair['ray']['wall']:.1f} s "
              f"({len(pair['ray']['worker_phases'])} worker(s)), ratio {ratios[-1]:.2f}, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return {"runs": runs, "ratios": ratios}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--texts", default="48,192", help="job sizes (texts), comma-separated; two or more fit the overhead")
    ap.add_argument("--pairs", type=int, default=3, help="whole-process pairs per size")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--same-process", action=argparse.BooleanOptionalAction, default=False)
    args = ap.parse_args()
    sizes = [int(x) for x in args.texts.split(",")]
    import ray

    from interpretlm.runtime import use_free_cores

    # The same-process local runs use the free cores, as the command line and the whole-process jobs do
    # (on a busy machine a 2-thread forward waits for its slower thread; see interpretlm.runtime).
    use_free_cores()

    from interpretlm.probing.store import ActivationStore  # noqa: F401 (the family is imported once, untimed)

    if (path := target()) is not None and path.exists() and path.stat().st_size:   # this run's figures replace the last
        data = json.loads(path.read_text())
        data.pop("engine", None)
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    lm = il.load(args.model)
    tokens = {n: int(lm.tokenize(corpus(n)).attention_mask.sum()) for n in sizes}
    del lm
    root = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    cluster_start = time.perf_counter() - t
    address = ray.get_runtime_context().gcs_address
    results: dict[int, dict[str, Any]] = {}
    try:
        for n in sizes:
            ref = root / f"ref-{n}"
            il.activations(args.model, corpus(n), path=ref, shard_size=args.shard_size, batch_size=8)
            print(f"{n} texts ({tokens[n]:,} tokens), whole process, {args.pairs} alternating pairs:", flush=True)
            results[n] = whole_process(args, n, root, address, ref)
            if args.same_process:
                results[n]["same"] = same_process(args, n, root, ref)
            shutil.rmtree(ref)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{args.model}, every layer's resid_post, shards of {args.shard_size}, a local cluster of {args.cpus} "
          f"CPUs (started in {cluster_start:.1f} s, once per session: not in the figures)")
    fits = {}
    for n in sizes:
        r = results[n]
        if r["ratios"]:
            fits[n] = report_whole(n, tokens[n], r)
        if "same" in r:
            s = r["same"]
            print(f"  same process: local {s['local']:.2f} s, ray cold {s['cold']:.2f} s ({s['cold'] / s['local']:.2f}x), "
                  f"ray with workers kept {s['kept']:.2f} s ({s['kept'] / s['local']:.2f}x)")
            for k in ("local", "cold", "kept"):
                record("engine", f"t{n}_same_{k}_s", s[k])
    if len(fits) >= 2:
        (t1, l1, r1), (t2, l2, r2) = fits[min(fits)], fits[max(fits)]
        cl, cr = (l2 - l1) / (t2 - t1), (r2 - r1) / (t2 - t1)
        fl, fr = l1 - cl * t1, r1 - cr * t1
        print(f"\nfit over {min(fits)} and {max(fits)} texts: local {fl:.1f} s + {cl * 1e3:.2f} ms/token, "
              f"ray {fr:.1f} s + {cr * 1e3:.2f} ms/token: the Ray engine's fixed overhead {fr - fl:.1f} s")
        record("engine", "fixed_local_s", fl)
        record("engine", "fixed_ray_s", fr)
        record("engine", "fixed_overhead_s", fr - fl)
        record("engine", "local_ms_per_token", cl * 1e3)
        record("engine", "ray_ms_per_token", cr * 1e3)
        if fr <= GOAL * fl:
            print(f"ray <= {GOAL}x local at every size")
            record("engine", "break_even_tokens", 0)
        elif GOAL * cl > cr:
            n_star = (fr - GOAL * fl) / (GOAL * cl - cr)
            per_text = t2 / max(fits)
            print(f"ray <= {GOAL}x local above ~{n_star:,.0f} tokens (~{n_star / per_text:,.0f} texts of this corpus)")
            record("engine", "break_even_tokens", n_star)
            record("engine", "break_even_texts", n_star / per_text)
        else:
            print(f"no break-even: the Ray engine's per-token cost is over {GOAL}x the local one's")
    record("engine", "cluster_start_s", cluster_start)
    record("engine", "load_average", os.getloadavg()[0])


def report_whole(n: int, n_tokens: int, r: dict[str, Any]) -> tuple[int, float, float]:
    """Print and record one size's whole-process pairs; return (tokens, median local wall, median Ray wall)."""
    wl, wr = [f["wall"] for f in r["runs"]["local"]], [f["wall"] for f in r["runs"]["ray"]]
    print(f"\n{n} texts, {n_tokens:,} tokens: local {spread(wl)} s, ray {spread(wr)} s, "
          f"ratio ray/local {spread(r['ratios'])} (goal <= {GOAL})")
    workers = sorted({len(f["worker_phases"]) for f in r["runs"]["ray"]})
    threads = sorted({f["threads"] for f in r["runs"]["local"]})
    print(f"  local torch threads {threads}, ray workers {workers} (1 thread each)")
    sl = [stages(f) for f in r["runs"]["local"]]
    sr = [stages(f) for f in r["runs"]["ray"]]
    print("  where the time goes (median s):")
    for name, st in (("local", sl), ("ray", sr)):
        print(f"    {name}: " + ", ".join(f"{k.strip()} {med([s[k] for s in st]):.2f}" for k in st[0]))
    record("engine", f"t{n}_tokens", n_tokens)
    record("engine", f"t{n}_local_s", med(wl))
    record("engine", f"t{n}_ray_s", med(wr))
    for k, v in (("median", med(r["ratios"])), ("min", min(r["ratios"])), ("max", max(r["ratios"]))):
        record("engine", f"t{n}_ratio_{k}", v)
    record("engine", f"t{n}_ray_workers", max(workers))
    for name, st in (("local", sl), ("ray", sr)):
        for k in st[0]:
            record("engine", f"t{n}_{name}_stage_{k.strip().replace(' ', '_')}", med([s[k] for s in st]))
    return n_tokens, med(wl), med(wr)


def same_process(args: argparse.Namespace, n: int, root: Path, ref: Path) -> dict[str, float]:
    """The local engine here, then a cold Ray job, then one on the workers kept from it; seconds each."""
    kw = dict(components="resid_post", shard_size=args.shard_size, batch_size=8)
    texts, out = corpus(n), {}
    t = time.perf_counter()
    il.activations(args.model, texts, path=root / "same-local", engine="local", **kw)
    out["local"] = time.perf_counter() - t
    eng = RayEngine(keep_workers=True)
    for k in ("cold", "kept"):
        t = time.perf_counter()
        il.activations(args.model, texts, path=root / f"same-{k}", engine=eng, **kw)
        out[k] = time.perf_counter() - t
    eng.release()
    for k in ("local", "cold", "kept"):
        assert same(ref, root / f"same-{k}")
        shutil.rmtree(root / f"same-{k}")
    return out


if __name__ == "__main__":
    main()
