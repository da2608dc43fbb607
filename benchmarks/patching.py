"""Activation patching on the default model: interpretlm vs TransformerLens 4.3 and nnsight 0.8.

Both peers run in their own venvs (set-up in benchmarks/README.md) on the same model (the
local HF folder ``il.load()`` writes for SmolLM2-135M), the same token ids and the same
metric, ``(patched - corrupted) / (clean - corrupted)`` of ``logit(" Mary") - logit(" John")``:

- TransformerLens (``_tl_runner.py``): its model bridge and its ``patching`` functions,
  ``get_act_patch_resid_pre`` (``[layer, pos]``) and ``get_act_patch_attn_head_out_all_pos``
  (``[layer, head]``), one forward pass per patch;
- nnsight (``_nnsight_runner.py``): the loop its tutorial teaches, one ``model.trace`` per
  patch that writes the clean activation.

interpretlm fills many patches per forward pass and replays each from the patched block on
the corrupted run's cached residual stream. Runs are interleaved (peer, then ours, per round)
and the speed-up of each round is taken within that round, so a loaded machine slows both
sides alike; the script prints the median speed-up over rounds and the largest difference of
the grids. A peer whose venv is missing is skipped with a message. Then it prints the Pearson
correlation of attribution patching and EAP-IG with exact patching on the same grids.

Run:  PYTHONPATH=src python benchmarks/patching.py [--threads 1] [--rounds 3] [--json OUT]

With ``--estimators`` it measures instead the Pearson r of each estimator of
``il.attribution_patch`` (plain AtP, AtP* with the QK fix only, AtP* with GradDrop, EAP-IG, EAP-IG along
token paths, EAP-IG over activations; ``--only`` picks some)
against exact patching (``il.patch``) on the resid_pre ``[layer, pos]`` and heads
``[layer, head]`` grids of ``--n`` IOI and ``--n`` induction prompts, with the passes each used.

Run:  PYTHONPATH=src python benchmarks/patching.py --estimators [--n 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import interpretlm as il

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
GRIDS = ("resid_pre", "heads")
VENVS = Path(os.environ.get("INTERPRETLM_BENCH_VENVS", "/work/main/.bench-venvs"))
PEERS = {"TransformerLens": (VENVS / "tl", "_tl_runner.py"),
         "nnsight": (VENVS / "nnsight", "_nnsight_runner.py")}


def model_dir() -> Path:
    """The HF folder (config, safetensors, tokenizer) that ``il.load()`` wrote for the default model."""
    return next(il.cache_dir().glob("gguf/smollm2-135m-*"))


def run_peer(python: Path, runner: str, job: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        # the peer venv holds no interpretlm; the runner needs none (token ids come in the job)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TQDM_DISABLE": "1"}
        res = subprocess.run([str(python), str(Path(__file__).with_name(runner)), str(job_path), str(out_path)],
                             capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"{runner} failed:\n{res.stderr[-2000:]}")
        return json.loads(out_path.read_text())


def ours(lm, target, batch_size: int) -> dict:
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        lm.forward(CORRUPTED)
        ts.append(time.perf_counter() - t)
    row = {"forward_seconds": statistics.median(ts)}
    for g in GRIDS:
        t = time.perf_counter()
        r = il.patch(lm, CLEAN, CORRUPTED, target, over=g, batch_size=batch_size, progress=False)
        row[g] = {"seconds": time.perf_counter() - t, "effect": r.effect}
    return row


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


ESTIMATORS = (("AtP", {"estimator": "attribution"}),
              ("AtP* (QK fix)", {"estimator": "atp_star", "graddrop": False}),
              ("AtP* (QK fix + GradDrop)", {"estimator": "atp_star"}),
              ("EAP-IG (5 steps)", {"estimator": "eap_ig"}),
              ("EAP-IG along token paths (5 steps)", {"estimator": "eap_ig_tok"}),
              ("EAP-IG over activations (5 steps)", {"estimator": "eap_ig_act"}))


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def key_of(kw: dict) -> str:
    """The estimator's key in the results JSON (``atp_star_qk`` for AtP* without GradDrop)."""
    return f"{kw['estimator']}{'' if kw.get('graddrop', True) else '_qk'}"


def estimators(lm, n: int, only: list[str] | None = None, sets_wanted: list[str] | None = None,
               grids: tuple[str, ...] = GRIDS) -> None:
    """Pearson r of every estimator (or those keyed in ``only``) against exact patching, per
    dataset (all, or those in ``sets_wanted``) and grid."""
    import warnings
    # IOI with the S2 name swapped (the corruption of the README's prompt) and with three fresh
    # names (ABC, the IOI paper's), and induction (a random first half)
    makers = {"IOI swap": lambda: il.datasets.ioi(n=n, seed=1, lm=lm, corruption="swap"),
              "IOI ABC": lambda: il.datasets.ioi(n=n, seed=1, lm=lm),
              "induction": lambda: il.datasets.induction(n=n, seed=1, lm=lm)}
    sets = {k: f() for k, f in makers.items() if not sets_wanted or k in sets_wanted}
    lowest: dict[str, float] = {}
    print("| data | grid | estimator | Pearson r vs il.patch | passes (per prompt) | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for data, ds in sets.items():
        for over in grids:
            exact = il.patch(lm, ds.clean, ds.corrupted, ds.target, over=over, progress=False).effect
            for label, kw in ESTIMATORS:
                if only and key_of(kw) not in only:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    a, t = timed(lambda: il.attribution_patch(lm, ds.clean, ds.corrupted, ds.target, over=over,
                                                              progress=False, **kw))
                d = a.diagnostics
                r = pearson(a.effect, exact)
                lowest[label] = min(lowest.get(label, 1.0), r)
                key = f"{data}.{over}.{key_of(kw)}"
                record("estimators", f"{key}.pearson", r)
                # passes per prompt, forward and backward
                record("estimators", f"{key}.forward_passes", d["forward_passes"] / len(ds.clean))
                record("estimators", f"{key}.backward_passes", d["backward_passes"] / len(ds.clean))
                print(f"| {data} ({len(ds.clean)}) | {over} | {label} | {r:.3f} | "
                      f"{d['forward_passes'] // len(ds.clean)} F + {d['backward_passes'] // len(ds.clean)} B | "
                      f"{t:.1f} |", flush=True)
    print("lowest r over the sets and grids: " + ", ".join(f"{k} {v:.3f}" for k, v in lowest.items()))
    record("estimators", "prompts_per_set", n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (peer, ours) per peer")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-attribution", action="store_true")
    ap.add_argument("--estimators", action="store_true",
                    help="measure the estimators of il.attribution_patch against exact patching")
    ap.add_argument("--n", type=int, default=10, help="prompts per dataset for --estimators")
    ap.add_argument("--only", nargs="*", help="--estimators: these estimator keys only (attribution, atp_star_qk, "
                    "atp_star, eap_ig, eap_ig_tok, eap_ig_act)")
    ap.add_argument("--sets", nargs="*", help="--estimators: these data sets only ('IOI swap', 'IOI ABC', induction)")
    ap.add_argument("--grids", nargs="*", default=list(GRIDS), help="--estimators: these grids only")
    ap.add_argument("--json", help="merge the figures into this JSON file (see run_all.py)")
    args = ap.parse_args()
    if args.json:
        os.environ["INTERPRETLM_BENCH_JSON"] = args.json
    torch.set_num_threads(args.threads)
    lm = il.load()
    if args.estimators:
        estimators(lm, args.n, args.only, args.sets, tuple(args.grids))
        return
    target = il.Contrast(" Mary", " John")
    ids = {k: lm.tokenize(p).input_ids[0].tolist() for k, p in (("clean", CLEAN), ("corrupted", CORRUPTED))}
    a, b = (lm.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (" Mary", " John"))
    job = {"model_dir": str(model_dir()), "threads": args.threads, "grids": list(GRIDS),
           "pairs": [{**ids, "a": a, "b": b}]}
    first = ours(lm, target, args.batch_size)  # also warms up
    print(f"model {lm.name}: {lm.n_layers} layers, {lm.n_heads} heads ({lm.n_kv_heads} kv); prompt "
          f"{len(ids['clean'])} tokens; {args.threads} thread(s); one forward {first['forward_seconds']:.3f} s")
    print(f"grids: [layer, pos] resid_pre ({lm.n_layers * len(ids['clean'])} patches), "
          f"[layer, head] per-head outputs at all positions ({lm.n_layers * lm.n_heads} patches)")
    speedups: dict[str, list[float]] = {}
    for peer, (venv, runner) in PEERS.items():
        python = venv / "bin" / "python"
        if not python.exists():
            print(f"{peer}: skipped, its venv {venv} is missing (set-up: benchmarks/README.md)")
            continue
        rows = []
        for _ in range(args.rounds):
            theirs = run_peer(python, runner, job)["pairs"][0]
            rows.append((theirs, ours(lm, target, args.batch_size)))
        for g in GRIDS:
            ratio = statistics.median(t[g]["seconds"] / o[g]["seconds"] for t, o in rows)
            diff = max(float((o[g]["effect"] - torch.tensor(t[g]["effect"])).abs().max()) for t, o in rows)
            # each side's time in units of its own plain forward pass, measured in its own process
            fwd = statistics.median(t[g]["seconds"] / t["forward_seconds"] for t, _ in rows)
            fwd_ours = statistics.median(o[g]["seconds"] / o["forward_seconds"] for _, o in rows)
            t_peer = statistics.median(t[g]["seconds"] for t, _ in rows)
            t_ours = statistics.median(o[g]["seconds"] for _, o in rows)
            speedups.setdefault(g, []).append(ratio)
            print(f"{peer:15s} {g:9s}: {peer} {t_peer:6.2f} s ({fwd:5.0f} forwards), interpretlm {t_ours:5.2f} s "
                  f"({fwd_ours:4.0f} forwards): {ratio:5.1f}x faster | max |difference| {diff:.1e} "
                  f"({'equal' if diff <= 1e-4 else 'DIFFERENT'} at 1e-4)")
            record("patching", f"{peer}.{g}.speedup", ratio)
            record("patching", f"{peer}.{g}.max_diff", diff)
            record("patching", f"{peer}.{g}.forwards", fwd)
            record("patching", f"interpretlm.{g}.forwards", fwd_ours)
    for g, r in speedups.items():
        print(f"{g}: interpretlm vs the faster peer {min(r):.1f}x (goal >= 5x)")
        record("patching", f"faster_peer.{g}.speedup", min(r))
    record("patching", "rounds", args.rounds)
    record("patching", "threads", args.threads)
    if args.skip_attribution:
        return
    for over in GRIDS:
        exact = first[over]["effect"]
        for method in ("attribution", "eap_ig"):
            t = time.perf_counter()
            r = il.attribution_patch(lm, CLEAN, CORRUPTED, target, over=over, estimator=method)
            t = time.perf_counter() - t
            rho = pearson(r.effect, exact)
            record("patching", f"{method}.{over}.pearson", rho)
            print(f"{method:12s} over {over:9s}: Pearson r vs exact patching {rho:.3f} ({t:.2f} s, "
                  f"{r.diagnostics['forward_passes']} forward + {r.diagnostics['backward_passes']} backward)")


if __name__ == "__main__":
    main()
