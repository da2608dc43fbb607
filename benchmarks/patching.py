"""Activation patching on the default model: interpretlm vs a plain loop of one forward per patch.

The plain loop is how TransformerLens's ``patching.py`` works (``get_act_patch_resid_pre``,
``get_act_patch_attn_head_out_all_pos``): for every (layer, position) or (layer, head), run
the corrupted prompt once with a hook writing the clean activation. interpretlm fills
many patches per forward pass and replays each from the patched block on the corrupted
run's cached residual stream. Both give the same numbers; the script prints the largest
difference and the speed ratio, then the Pearson correlation of attribution patching
and EAP-IG with exact patching on the same grids.

Run:  PYTHONPATH=src python benchmarks/patching.py [--threads 2] [--repeats 1]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-attribution", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = il.load()
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
