"""Attribution benchmark: interpretlm against Captum and shap on the same model, inputs and targets.

Run in the Captum peer venv (its set-up is in benchmarks/README.md; shap goes into the same venv):

    PYTHONPATH=src /work/main/.bench-venvs/captum/bin/python benchmarks/attribution.py [--quick] [--only shapley]

It prints, for each pair, the wall-time ratio, the model evaluations (sequences run) and
the accuracy reached: IG's completeness error, Spearman against exact Shapley values.
Shapley accuracy-versus-evaluations curves are measured on the *same game* for every
library: all 2^10 coalition values of the 10-word prompt are scored once with the model,
and each library's estimator reads them from that table (so the curves cost no model
time and differ only by estimator); wall times are then measured with the real model.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402  (figures for run_all.py / results.json)

import numpy as np
import torch

import interpretlm as il
from interpretlm.attribution import rank_correlation
from interpretlm.attribution.explained import Explained
from interpretlm.attribution.perturbation import lime_fit
from interpretlm.attribution.shapley import exact_shapley, feature_hierarchy, kernel_shapley, owen_values

IOI = "When Mary and John went to the store, John gave a drink to"
TEN = "The cat sat on the mat because it was very"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------- Integrated Gradients
def bench_ig(lm, steps):
    from captum.attr import LayerIntegratedGradients

    mary = lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]
    ids = lm.tokenize(IOI).input_ids
    base = torch.full_like(ids, lm.tokenizer.unk_token_id)

    def fwd(x):
        out = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[:, -1]
        return torch.log_softmax(out.float(), -1)[:, mary]

    with torch.no_grad():
        delta = float(fwd(ids) - fwd(base))
    lig = LayerIntegratedGradients(fwd, lm.model.get_input_embeddings())
    print("\n== Integrated Gradients: default model, IOI prompt, target log p(' Mary'), baseline <|endoftext|>")
    print(f"f(x) - f(baseline) = {delta:.3f}")
    captum = {}
    for n in steps:
        attr, sec = timed(lambda: lig.attribute(ids, baselines=base, n_steps=n, method="gausslegendre",
                                                internal_batch_size=16))
        tok = attr.sum(-1)[0].detach().numpy()
        err = abs(tok.sum() - delta) / abs(delta)
        captum[n] = (tok, sec, err)
        print(f"captum LayerIntegratedGradients n_steps={n:5d}: {sec:7.1f} s, {n} evaluations, "
              f"completeness error {err:.1%}")
        record("ig", f"captum.{n}.completeness_error", err)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same, sec_same = timed(lambda: il.attribute(lm, IOI, il.NextToken(" Mary"), method="integrated_gradients",
                                                    refine=False, n_steps=50, batch_size=16))
    diff = np.abs(same.scores - captum[steps[0]][0]).max() if steps[0] == 50 else float("nan")
    print(f"interpretlm refine=False, 50 Gauss-Legendre steps: {sec_same:.1f} s, completeness error "
          f"{same.completeness_error:.1%}, max |ours - captum| per token = {diff:.2e} "
          f"(scores sum {same.scores.sum():+.2f})")
    ours, sec = timed(lambda: il.attribute(lm, IOI, il.NextToken(" Mary"), method="integrated_gradients"))
    d = ours.diagnostics
    print(f"interpretlm adaptive (default): {sec:.1f} s, {d['gradient_evaluations']} evaluations "
          f"({d['forward_passes']} forward + {d['backward_passes']} backward batched passes), completeness error "
          f"{ours.completeness_error:.2%}, converged {d['converged']}")
    record("ig", "interpretlm.completeness_error", ours.completeness_error)
    record("ig", "interpretlm.evaluations", d["gradient_evaluations"])
    ok = [n for n in steps if captum[n][2] <= 0.01]
    if ok:
        best = min(ok, key=lambda n: captum[n][1])
        print(f"ratio: fastest captum setting reaching 1% (n_steps={best}) took {captum[best][1] / sec:.1f}x our time")
    else:
        print(f"no captum setting in {steps} reaches 1% completeness error; ours reaches "
              f"{ours.completeness_error:.2%} in {sec:.1f} s (captum at {steps[-1]} steps: "
              f"{captum[steps[-1]][2]:.0%} in {captum[steps[-1]][1]:.1f} s, {captum[steps[-1]][1] / sec:.1f}x our time)")


# ---------------------------------------------------------------------------- Shapley values
def smallest(budgets, acc, goal=0.95):
    for b, a in zip(budgets, acc):
        if a >= goal:
            return b
    return None


def bench_shapley(lm, seeds, quick):
    from captum.attr import FeatureAblation, KernelShap, Lime, ShapleyValueSampling

    ex = Explained.build(lm, TEN, il.NextToken(" tired"), granularity="word", batch_size=64)
    F = len(ex.features)
    print(f"\n== Shapley values: default model, {F} words of {TEN!r}, target log p(' tired'), masking <|endoftext|>")
    (phi, table), sec_exact = timed(lambda: exact_shapley(lambda k: ex.values(k), F))
    exact = phi[0]
    codes = 1 << np.arange(F)
    print(f"exact Shapley values: {2 ** F} coalitions in {sec_exact:.1f} s ({sec_exact / 2 ** F * 1e3:.1f} ms each)")

    count = [0]

    def table_game(keep):
        count[0] += len(keep)
        return table[(np.asarray(keep).astype(int) * codes).sum(1)]

    def torch_game(x):  # captum: x [n, F] in {0, 1}
        return torch.as_tensor(table_game(x.detach().numpy() > 0.5)[:, 0])

    def mean_acc(run):
        accs, evals = [], []
        for s in seeds:
            count[0] = 0
            accs.append(rank_correlation(run(s), exact))
            evals.append(count[0])
        return float(np.mean(accs)), int(np.mean(evals))

    budgets = [64, 128, 192, 256, 320, 400, 512, 768, 1024, 2048, 4096, 8192] if not quick else [128, 256, 400, 512]
    x1, x0 = torch.ones(1, F), torch.zeros(1, F)
    curves = {}
    curves["interpretlm kernel_shap"] = [mean_acc(lambda s, n=n: kernel_shapley(table_game, F, n, s)[0][0])
                                         for n in budgets]

    def captum_kernel(s, n):
        torch.manual_seed(s)
        return KernelShap(torch_game).attribute(x1, baselines=x0, n_samples=n, perturbations_per_eval=64)[0].numpy()
    curves["captum KernelShap"] = [mean_acc(lambda s, n=n: captum_kernel(s, n)) for n in budgets]

    def captum_svs(s, n):
        torch.manual_seed(s)
        return ShapleyValueSampling(torch_game).attribute(x1, baselines=x0, n_samples=max(1, n // (F + 1)),
                                                          perturbations_per_eval=64)[0].numpy()
    curves["captum ShapleyValueSampling"] = [mean_acc(lambda s, n=n: captum_svs(s, n)) for n in budgets]

    tree = feature_hierarchy(ex.features.labels)
    try:
        import shap
    except ImportError:  # the Captum venv of benchmarks/README.md has no shap: skip its curve
        shap = None

    def shap_partition(s, n):
        linkage = _linkage(tree, F)
        masker = shap.maskers.Partition(np.zeros((1, F)), clustering=linkage)
        expl = shap.explainers.Partition(lambda X: table_game(X > 0.5)[:, 0], masker)
        return expl(np.ones((1, F)), max_evals=n, silent=True).values[0]
    if shap is not None:
        curves["shap Partition"] = [mean_acc(lambda s, n=n: shap_partition(s, n)) for n in budgets]
    count[0] = 0
    owen = owen_values(table_game, F, tree)[0][0]
    print(f"interpretlm partition_shap (exact Owen values, our hierarchy): {count[0]} evaluations, "
          f"Spearman {rank_correlation(owen, exact):.3f} against exact Shapley")

    # LIME at Captum's 256 samples on the same table, mean over the seeds
    lime_ours = mean_acc(lambda s: lime_fit(table_game, F, 256, s)[0][0])[0]

    def captum_lime(s):
        torch.manual_seed(s)
        return Lime(torch_game).attribute(x1, baselines=x0, n_samples=256, perturbations_per_eval=64)[0].numpy()
    lime_captum = mean_acc(captum_lime)[0]
    print(f"LIME, 256 samples, mean Spearman against exact Shapley over {len(seeds)} seeds: interpretlm lime "
          f"(defaults) {lime_ours:.3f}, captum Lime (defaults) {lime_captum:.3f}")
    record("shapley", "lime.interpretlm.spearman", lime_ours)
    record("shapley", "lime.captum.spearman", lime_captum)

    print("mean Spearman against exact Shapley values (over seeds) / mean model evaluations, per budget:")
    need = {}
    for name, c in curves.items():
        print(f"  {name:<30} " + "  ".join(f"{a:.3f}/{e}" for a, e in c))
        need[name] = smallest([e for _, e in c], [a for a, _ in c])
        record("shapley", f"{name}.evaluations_to_0.95", need[name] if need[name] is not None else "never")
    ours = need["interpretlm kernel_shap"]
    for name, n in need.items():
        if name.startswith("interpretlm"):
            continue
        if n is None:
            print(f"  {name} never reached Spearman 0.95 within {budgets[-1]} samples; ours needed {ours} evaluations")
        elif ours:
            print(f"  evaluations to reach Spearman 0.95: {name} {n}, interpretlm {ours} -> {n / ours:.1f}x fewer")

    # wall times with the real model at the same budget
    n = ours or 512
    real = lambda: il.attribute(lm, TEN, " tired", method="kernel_shap", granularity="word", n_samples=n, seed=0,
                                batch_size=64)
    a, sec_ours = timed(real)
    ids = ex.batch.input_ids
    mask = torch.zeros_like(ids)
    for f, pos in enumerate(ex.features.positions):
        mask[0, pos] = f
    base = torch.full_like(ids, ex.mask_id)
    tired = lm.tokenizer(" tired", add_special_tokens=False)["input_ids"][0]

    def fwd(x):
        with torch.no_grad():
            out = lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[:, -1]
        return torch.log_softmax(out.float(), -1)[:, tired]

    torch.manual_seed(0)
    _, sec_cap = timed(lambda: KernelShap(fwd).attribute(ids, baselines=base, feature_mask=mask, n_samples=n,
                                                         perturbations_per_eval=64))
    print(f"wall time, real model, {n} samples: interpretlm kernel_shap {sec_ours:.1f} s "
          f"(efficiency error {a.completeness_error:.1e}), captum KernelShap {sec_cap:.1f} s -> ratio {sec_cap / sec_ours:.2f}")
    occ, sec_occ = timed(lambda: il.attribute(lm, TEN, " tired", method="occlusion", granularity="word", batch_size=64))
    fa, sec_fa = timed(lambda: FeatureAblation(fwd).attribute(ids, baselines=base, feature_mask=mask,
                                                              perturbations_per_eval=64)[0])
    fa_feat = np.array([float(fa[pos[0]]) for pos in ex.features.positions])
    print(f"occlusion vs captum FeatureAblation: {sec_fa / sec_occ:.2f}x time ratio, {occ.diagnostics['model_evaluations']}"
          f" evaluations each, max |difference| {np.abs(occ.scores - fa_feat).max():.1e}")
    lime, sec_lime = timed(lambda: il.attribute(lm, TEN, " tired", method="lime", granularity="word", n_samples=256,
                                                seed=0, batch_size=64))
    torch.manual_seed(0)
    cl, sec_cl = timed(lambda: Lime(fwd).attribute(ids, baselines=base, feature_mask=mask, n_samples=256,
                                                   perturbations_per_eval=64)[0])
    cl_feat = np.array([float(cl[pos[0]]) for pos in ex.features.positions])
    print(f"lime vs captum Lime (256 samples, seed 0, real model): {sec_cl / sec_lime:.2f}x time ratio; Spearman "
          f"against exact Shapley: ours {rank_correlation(lime.scores, exact):.3f} (weighted R² "
          f"{lime.diagnostics['r2'][0]:.3f}), captum {rank_correlation(cl_feat, exact):.3f}")


def _linkage(tree, F):
    """A scipy-style linkage matrix ``[F - 1, 4]`` for a binary tree of feature indices."""
    rows, nxt = [], [F]

    def walk(t):
        if isinstance(t, int):
            return t, 1
        (a, na), (b, nb) = walk(t[0]), walk(t[1])
        rows.append([a, b, float(len(rows) + 1), na + nb])
        nxt[0] += 1
        return nxt[0] - 1, na + nb

    walk(tree)
    return np.array(rows, dtype=float)


# ---------------------------------------------------------------------------- continuation cost
def bench_continuation(lm):
    print("\n== Multi-token targets: passes of a 10-token continuation vs a single next token (IOI prompt)")
    cont = il.Continuation(" Mary. She said thank you to John and left")
    for method, opts in (("saliency", {}), ("input_x_gradient", {}), ("integrated_gradients", {"max_evals": 65}),
                         ("kernel_shap", {"n_samples": 128})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            single, s1 = timed(lambda: il.attribute(lm, IOI, il.NextToken(" Mary"), method=method, **opts))
            multi, s2 = timed(lambda: il.attribute(lm, IOI, cont, method=method, **opts))
        p1 = single.diagnostics["forward_passes"] + single.diagnostics["backward_passes"]
        p2 = multi.diagnostics["forward_passes"] + multi.diagnostics["backward_passes"]
        print(f"  {method:<22} rows {len(multi.rows)}: batched passes {p2} vs {p1} -> {p2 / p1:.2f}x; sequences "
              f"{multi.diagnostics['model_evaluations']} vs {single.diagnostics['model_evaluations']}; "
              f"wall {s2:.1f} s vs {s1:.1f} s")
        record("continuation", f"{method}.passes_ratio", p2 / p1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer IG step counts, budgets and seeds")
    ap.add_argument("--only", choices=["ig", "shapley", "continuation"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lm = il.load()
    if args.only in (None, "ig"):
        bench_ig(lm, [50, 100, 200] if args.quick else [50, 100, 200, 500, 1000])
    if args.only in (None, "shapley"):
        bench_shapley(lm, seeds=range(3) if args.quick else range(5), quick=args.quick)
    if args.only in (None, "continuation"):
        bench_continuation(lm)


if __name__ == "__main__":
    main()
