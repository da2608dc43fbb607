"""Run every benchmark, each in the venv it needs, and write all figures to benchmarks/results.json.

    python benchmarks/run_all.py [--only patching lrp ...] [--out benchmarks/results.json]
    (or `make bench`)

Each benchmark calls ``_results.record`` for the figures it prints; this script points them
all at one fresh JSON file, then renders the README's "Benchmarks at a glance" table from it
(``render_table.py``), so the README quotes exactly what was measured. A benchmark whose peer
venv is missing is skipped with a message saying how to build it (benchmarks/README.md);
benchmarks that compare with a peer from inside (``patching.py``, ``lrp.py``) skip only that
peer's rows. Runs take a while on 2 CPU cores (the attribution benchmark alone ~tens of minutes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENVS = Path(os.environ.get("INTERPRETLM_BENCH_VENVS", "/work/main/.bench-venvs"))
MAIN = Path(sys.executable)

# name -> (script and arguments, python to run it with: None = this interpreter)
BENCHMARKS: dict[str, tuple[list[str], Path | None]] = {
    "attribution": (["attribution.py"], VENVS / "captum" / "bin" / "python"),
    "lrp": (["lrp.py"], None),
    "patching": (["patching.py", "--threads", "1", "--rounds", "2"], None),
    "probing": (["probing_activations.py"], None),
    "attention_memory": (["attention_memory.py", "--tokens", "2048"], None),
    "estimators": (["patching.py", "--estimators", "--n", "10"], None),
    "app_latency": (["app_latency.py"], None),
    "reasoning": (["reasoning.py"], None),
    "engine": (["engine.py", "--texts", "48,384", "--pairs", "4"], None),
    "counterfactuals": (["counterfactuals.py", "--tasks", "sentiment", "--n", "6", "--fluency", "0", "1",
                         "--cache-compare", "3", "--threads", "1"], None),
    "counterfactuals_peer": (["counterfactuals.py", "--peer", "textattack", "--tasks", "sentiment,topic", "--n", "100",
                              "--recipes", "embedding,deepwordbug", "--threads", "1"], None),
    "features": (["features.py", "--tokens", "100000", "--threads", "1"], None),
    "features_units": (["features_units_graph.py"], None),
    "influence": (["influence.py", "--peers"], None),
    "features_graph": (["features_graph_peer.py", "--threads", "1", "--prompts", "2"], None),
    "influence_default": (["influence.py", "--workload", "default-model"], None),
    "explanations": (["explanations.py", "--ground-truth", "--gt-scorers", "detection,fuzzing,embedding"], None),
    "explanations_cost": (["explanations.py", "--cost", "--planted"], None),
    "explanations_distribution": (["explanations.py", "--units", "17", "--windows", "10", "--max-windows", "400"], None),
    "explanations_neuronpedia": (["explanations_neuronpedia.py", "--units", "5"], None),
    "maximization": (["maximization.py", "--windows", "128", "--repeats", "3", "--epo-neurons", "0"], None),
    "maximization_scoring": (["maximization.py", "--scoring-ratio", "2"], None),
    "maximization_epo": (["maximization.py", "--epo-only", "--windows", "512", "--epo-steps", "20",
                          "--epo-population", "4", "--epo-swaps", "16"], None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--no-render", action="store_true", help="do not rewrite the README table")
    args = ap.parse_args()
    out = Path(args.out)
    fresh = out.with_suffix(".partial.json")
    fresh.unlink(missing_ok=True)
    env = os.environ | {"INTERPRETLM_BENCH_JSON": str(fresh), "PYTHONPATH": str(ROOT / "src")}
    failed = []
    for name in args.only:
        cmd, python = BENCHMARKS[name]
        python = python or MAIN
        if not python.exists():
            print(f"== {name}: skipped, peer venv {python.parent.parent} is missing "
                  "(how to build it: benchmarks/README.md)", flush=True)
            continue
        print(f"== {name}: {python} {' '.join(cmd)}", flush=True)
        t = time.perf_counter()
        res = subprocess.run([str(python), str(HERE / cmd[0]), *cmd[1:]], cwd=ROOT, env=env)
        print(f"== {name}: {'done' if res.returncode == 0 else 'FAILED'} in {time.perf_counter() - t:.0f} s", flush=True)
        if res.returncode != 0:
            failed.append(name)
    if fresh.exists():
        # keep figures of benchmarks not re-run this time (--only), replace those that were
        import json
        old = json.loads(out.read_text()) if out.exists() else {}
        new = json.loads(fresh.read_text())
        merged = {k: v for k, v in old.items() if k not in new} | new
        out.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
        fresh.unlink()
        print(f"figures written to {out}")
    if not args.no_render:
        subprocess.run([str(MAIN), str(HERE / "render_table.py"), "--json", str(out)], check=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
