"""Activation patching on the default model: interpretlm vs a plain loop of one forward per patch.

The plain loop is how TransformerLens's ``patching.py`` works (``get_act_patch_resid_pre``,
``get_act_patch_attn_head_out_all_pos``): for every (layer, position) or (layer, head), run
the corrupted prompt once with a hook writing the clean activation. interpretlm fills
many patches per forward pass and replays each from the patched block on the corrupted
run's cached residual stream. Both give the same numbers; the script prints the largest
difference and the speed ratio, then the Pearson correlation of attribution patching
and EAP-IG with exact patching on the same grids.

With ``--estimators`` it measures instead the Pearson r of each estimator of
``il.attribution_patch`` (plain AtP, AtP* with the QK fix only, AtP* with GradDrop, EAP-IG)
against exact patching (``il.patch``) on the resid_pre ``[layer, pos]`` and heads
``[layer, head]`` grids of ``--n`` IOI and ``--n`` induction prompts, with the passes each used.

Run:  PYTHONPATH=src python benchmarks/patching.py [--threads 2] [--repeats 1]
      PYTHONPATH=src python benchmarks/patching.py --estimators [--n 10]
"""

from __future__ import annotations

import argparse
import time

import torch

import interpretlm as il

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def plain_loop(lm, over: str) -> torch.Tensor:
    """One forward pass per patch, with a hook: the TransformerLens way."""
    target = il.Contrast(" Mary", " John")
    names = [f"blocks.{l}.{'attn.heads' if over == 'heads' else over}" for l in range(lm.n_layers)]
    with torch.no_grad():
        with lm.capture(names) as cache:
            lm.forward(CLEAN)
        clean = {n: cache[n].clone() for n in names}
        clean_v = float(lm.score(CLEAN, target))
        corrupt_v = float(lm.score(CORRUPTED, target))
        n_pos = clean[names[0]].shape[1]
        inner = range(lm.n_heads) if over == "heads" else range(n_pos)
        out = torch.zeros(lm.n_layers, len(inner))
        for l, name in enumerate(names):
            for j in inner:
                def hook(x, j=j, name=name):
                    x = x.clone()
                    if over == "heads":
                        x[:, :, j] = clean[name][:, :, j]
                    else:
                        x[:, j] = clean[name][:, j]
                    return x
                with lm.intervene({name: hook}):
                    v = float(lm.score(CORRUPTED, target))
                out[l, j] = (v - corrupt_v) / (clean_v - corrupt_v)
    return out


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


ESTIMATORS = (("AtP", {"estimator": "attribution"}),
              ("AtP* (QK fix)", {"estimator": "atp_star", "graddrop": False}),
              ("AtP* (QK fix + GradDrop)", {"estimator": "atp_star"}),
              ("EAP-IG (5 steps)", {"estimator": "eap_ig"}))


def estimators(lm, n: int) -> None:
    """Pearson r of every estimator against exact patching, per dataset and grid."""
    import warnings
    sets = {"IOI": il.datasets.ioi(n=n, seed=1, lm=lm), "induction": il.datasets.induction(n=n, seed=1, lm=lm)}
    print("| data | grid | estimator | Pearson r vs il.patch | passes (per prompt) | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for data, ds in sets.items():
        for over in ("resid_pre", "heads"):
            exact = il.patch(lm, ds.clean, ds.corrupted, ds.target, over=over, progress=False).effect
            for label, kw in ESTIMATORS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    a, t = timed(lambda: il.attribution_patch(lm, ds.clean, ds.corrupted, ds.target, over=over,
                                                              progress=False, **kw))
                d = a.diagnostics
                print(f"| {data} ({len(ds.clean)}) | {over} | {label} | {pearson(a.effect, exact):.3f} | "
                      f"{d['forward_passes'] // len(ds.clean)} F + {d['backward_passes'] // len(ds.clean)} B | "
                      f"{t:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-attribution", action="store_true")
    ap.add_argument("--estimators", action="store_true",
                    help="measure the estimators of il.attribution_patch against exact patching")
    ap.add_argument("--n", type=int, default=10, help="prompts per dataset for --estimators")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = il.load()
    if args.estimators:
        estimators(lm, args.n)
        return
    target = il.Contrast(" Mary", " John")
    lm.forward(CLEAN)  # warm up
    t1 = time.perf_counter()
    for _ in range(5):
        lm.forward(CORRUPTED)
    print(f"model {lm.name}: {lm.n_layers} layers, {lm.n_heads} heads ({lm.n_kv_heads} kv); prompt "
          f"{len(lm.tokenize(CLEAN).tokens[0])} tokens; one forward {(time.perf_counter() - t1) / 5:.3f} s")
    results = {}
    for over, label in (("resid_pre", "[layer, pos] resid_pre sweep"), ("heads", "[layer, head] sweep")):
        ref, t_loop = timed(lambda: plain_loop(lm, over))
        ours, t_ours = timed(lambda: il.patch(lm, CLEAN, CORRUPTED, target, over=over,
                                              batch_size=args.batch_size, progress=False))
        diff = float((ours.effect - ref).abs().max())
        results[over] = ours
        print(f"{label}: {ref.numel()} patches | plain loop {t_loop:.2f} s | interpretlm {t_ours:.2f} s | "
              f"speed-up {t_loop / t_ours:.1f}x | max |difference| {diff:.1e} "
              f"({'OK' if diff <= 1e-5 else 'DIFFERENT'} at 1e-5)")
    if args.skip_attribution:
        return
    for over in ("resid_pre", "heads"):
        exact = results[over].effect
        for method in ("attribution", "eap_ig"):
            fn = il.attribution_patch
            a, t = timed(lambda: fn(lm, CLEAN, CORRUPTED, target, over=over,
                                    estimator="eap_ig" if method == "eap_ig" else "attribution"))
            print(f"{method:12s} over {over:9s}: Pearson r vs exact patching {pearson(a.effect, exact):.3f} "
                  f"({t:.2f} s, {a.diagnostics['forward_passes']} forward + {a.diagnostics['backward_passes']} backward)")


if __name__ == "__main__":
    main()
