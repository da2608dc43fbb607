"""Feature dictionaries on the default model, beyond training: every feature mined in one pass, a feature
steered beside the concept's difference-in-means direction, and an attribution graph checked by patching.

Run by hand (not a test):

    PYTHONPATH=src .venv/bin/python benchmarks/features_units_graph.py                # the README's run
    PYTHONPATH=src .venv/bin/python benchmarks/features_units_graph.py --tokens 3000  # a short one

1. **Mining every feature** (``il.maximize(lm, il.Unit.all(sae), ...)``): the same windows folded from the
   features' non-zero activations and densely, in one process (CPU seconds; identical states).
2. **Steering beside the baseline** (``il.steer(..., positive=, negative=)``): the SAE feature that best detects
   the sea concept of ``benchmarks/features.py`` (held-out AUROC, ``compare_to_baselines`` without steering)
   steered at 0, 1/4, 1/2 and 1 times the residual's typical norm, the concept's difference-in-means direction
   beside it with the feature's norm.
3. **An attribution graph** (``il.attribution_graph``) through transcoders trained at the first ``--graph-layers``
   blocks (the other blocks' MLPs are error nodes): active features, time, the linearity error, circuit-tracer's
   replacement and completeness scores, node faithfulness and the edge check (the strongest edges patched in
   the model with everything else held).

Times are on a shared 2-core machine: noisy (CPU seconds are steadier than wall time).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

import interpretlm as il

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402
from features import OTHER, SEA  # noqa: E402  (the concept set of the baselines comparison)


def mining(lm, sae, windows: int) -> None:
    from interpretlm.maximization import mining as M

    real = M.fold_sparse
    cpu = {}
    states = {}
    for name, fold in (("sparse", real), ("dense", lambda *a, **k: False)):
        M.fold_sparse = fold
        t = time.process_time()
        r = il.maximize(lm, il.Unit.all(sae), corpus=il.corpus("builtin"), k=5, window=64, max_windows=windows,
                        batch_size=16, detail=0, progress=False)
        cpu[name] = time.process_time() - t
        states[name] = r
    M.fold_sparse = real
    same = bool(torch.equal(states["sparse"].top_windows, states["dense"].top_windows)
                and torch.equal(states["sparse"].hist_counts, states["dense"].hist_counts))
    alive = int((states["sparse"].frequency > 0).sum())
    print(f"mining {sae.n_features} features over {windows} windows of 64 tokens: sparse {cpu['sparse']:.1f} s CPU, "
          f"dense {cpu['dense']:.1f} s (ratio {cpu['dense'] / cpu['sparse']:.2f}); identical states: {same}; "
          f"{alive} features fire")
    record("features_units", "mining_cpu_ratio_dense_over_sparse", cpu["dense"] / cpu["sparse"])


def steering(lm, sae) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = il.features.compare_to_baselines(lm, sae, SEA, OTHER, strengths=None)
    best = cmp.best_feature
    with lm.capture([sae.component]) as cache:
        lm.forward(OTHER[0])
    norm = float(cache[sae.component][0, 1:].norm(dim=-1).mean())
    strengths = [0.0, round(0.25 * norm, 1), round(0.5 * norm, 1), round(norm, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = il.steer(lm, il.Unit(sae, best), strengths=strengths, prompts=["I think that", "Yesterday my friend told me"],
                     max_new_tokens=12, positive=SEA, negative=OTHER, progress=False)
    b = r.baselines["diff_in_means"]
    print(f"detection AUROC (held out): feature {best} {cmp.detection['sae_feature']:.2f}, difference-in-means "
          f"{cmp.detection['diff_in_means']:.2f}, probe {cmp.detection['linear_probe']:.2f}")
    print(f"steering at {strengths} (cosine of the two directions {r.diagnostics['baseline_cosine']:.2f}), "
          f"concept words {[w.strip() for w in r.concept]}:")
    print(f"  feature          rate {[round(x, 3) for x in r.concept_rate]}  perplexity {[round(x, 1) for x in r.perplexity]}")
    print(f"  diff-in-means    rate {[round(x, 3) for x in b['concept_rate']]}  perplexity {[round(x, 1) for x in b['perplexity']]}")
    for s, row in zip(strengths, r.samples):
        print(f"  feature at {s}: {row[0]!r}")
    record("features_units", "steer_feature_best_rate", max(r.concept_rate))
    record("features_units", "steer_diff_in_means_best_rate", max(b["concept_rate"]))


def graph(lm, tokens: int, layers: int, n_features: int) -> None:
    tcs = []
    t = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for l in range(layers):
            tcs.append(il.features.train(lm, f"blocks.{l}.mlp", kind="transcoder", n_features=n_features, k=16,
                                         tokens=tokens, eval_windows=8, progress=False))
    train_cpu = time.process_time() - t
    for tc in tcs:
        m = tc.metrics
        print(f"transcoder {tc.component}: FVU {m['fvu']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%}, "
              f"CE loss recovered {m['ce_loss_recovered']:.3f}")
    prompt = "The Eiffel Tower is in the city of"
    with torch.no_grad():
        tid = int(lm.forward(prompt).logits[0, -1].argmax())
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = il.attribution_graph(lm, prompt, il.NextToken(tid), transcoders=tcs, max_edges=10, progress=False)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    d = g.diagnostics
    print(f"graph of {prompt!r} -> {g.target_token!r} through {layers} transcoders ({train_cpu:.0f} s CPU to train): "
          f"{d['active_features']} active features, {d['backward_passes']} backward passes, {cpu:.1f} s CPU "
          f"({wall:.1f} s wall); linearity error {d['linearity_error']:.1e}; replacement {g.replacement_score:.3f}, "
          f"completeness {g.completeness_score:.3f}; node faithfulness {g.faithfulness:.3f}; edge error "
          f"{d['edge_error']:.3f} over {d['patched_edges']} edges")
    for s, tg, p, m in g.edges_checked:
        print(f"  {s} -> {tg}: edge {p:+.3f}, patched {m:+.3f}")
    for key, v in (("graph_linearity_error", d["linearity_error"]), ("graph_replacement", g.replacement_score),
                   ("graph_completeness", g.completeness_score), ("graph_edge_error", d["edge_error"]),
                   ("graph_cpu_seconds", cpu), ("graph_active_features", d["active_features"])):
        record("features_units", key, v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=6000, help="training tokens per dictionary")
    ap.add_argument("--n-features", type=int, default=1024)
    ap.add_argument("--graph-layers", type=int, default=4)
    ap.add_argument("--windows", type=int, default=64, help="windows mined per pass")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: mining, steering, graph")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lm = il.load()
    skip = set(filter(None, args.skip.split(",")))
    if not {"mining", "steering"} <= skip:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sae = il.features.train(lm, "blocks.9.resid_post", n_features=args.n_features, k=16, tokens=args.tokens,
                                    eval_windows=8, progress=False)
        print(f"{sae!r}: FVU {sae.metrics['fvu']:.3f}, CE loss recovered {sae.metrics['ce_loss_recovered']:.3f}")
        if "mining" not in skip:
            mining(lm, sae, args.windows)
        if "steering" not in skip:
            steering(lm, sae)
    if "graph" not in skip:
        graph(lm, args.tokens, args.graph_layers, args.n_features)


if __name__ == "__main__":
    main()
