"""Distillation on the default model: surrogates of SmolLM2-135M on the built-in sentiment task, and a student.

Run by hand (about 15 minutes on 2 shared CPU cores):

    PYTHONPATH=src .venv/bin/python benchmarks/distillation.py [--texts 200] [--steps 400] [--fit score]
    (--steps 0: the surrogates only; --kinds "": the student only; --fit score: surrogates of the
    LM's log-odds, fidelity = R²)

Prints, per surrogate, fidelity (held-out and word-deleted texts), accuracy against the gold
labels, size and the inference speed-up over the LM (both timed in this process, on the same
held-out texts: the LM's batched forward passes vs the surrogate's features and prediction);
the surrogates' agreement with the LM's KernelSHAP; then a student's top-1 agreement and KL on
held-out text, and its attribution agreement with the teacher (IG and KernelSHAP).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings

import interpretlm as il


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--kinds", default="sparse_linear,tree,ebm,aug_linear")
    ap.add_argument("--shap-texts", type=int, default=6)
    ap.add_argument("--ig-evals", type=int, default=32)
    ap.add_argument("--fit", default="label", choices=["label", "score"],
                    help="score: regress the LM's log-odds (fidelity = R²) instead of its class")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    lm = il.load()
    task = il.tasks.sentiment(args.texts, seed=0)
    out: dict = {"surrogates": {}}
    for kind in [k for k in args.kinds.split(",") if k]:   # --kinds "" runs the student only
        t = time.perf_counter()
        sur = il.distill(lm, task, into=kind, progress=False, layer=lm.n_layers // 2, fit=args.fit)
        row = {"fit": args.fit, "label_agreement": sur.label_agreement, "fidelity": sur.fidelity, "fidelity_perturbed": sur.fidelity_perturbed, "accuracy": sur.accuracy,
               "lm_accuracy": sur.lm_accuracy, "size": sur.size, "speedup": sur.speedup,
               "lm_ms_per_text": 1e3 * sur.diagnostics["seconds"]["lm_per_text"],
               "surrogate_ms_per_text": 1e3 * sur.diagnostics["seconds"]["surrogate_per_text"],
               "top_terms": sur.top(5), "seconds": round(time.perf_counter() - t, 1)}
        if args.shap_texts:
            agree = il.surrogate_vs_shap(lm, sur, sur.heldout["texts"][:args.shap_texts], n_samples=64)
            row["spearman_vs_kernel_shap"] = agree.mean
        out["surrogates"][kind] = row
        print(kind, json.dumps(row, default=str), flush=True)
    if args.steps == 0:   # surrogates only
        return
    corpus = (il.tasks.sentiment(300, seed=1).texts + il.tasks.agreement(200, seed=1).texts
              + il.tasks.ioi(200, seed=1).texts)
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        st = il.distill(lm, corpus, into="student", layers=2, d_model=128, heads=4, temperature=2.0,
                        steps=args.steps, batch_size=8, seq_len=48, path=folder, progress=False)
        train_s = time.perf_counter() - t
        small = il.load(folder)
        prompts = ["The movie was really", "When Mary and John went to the store, John gave a drink to",
                   "The keys to the cabinet", "Honestly, the food was"]
        ig = il.compare_explanations(lm, small, prompts, method="integrated_gradients",
                                    max_evals=args.ig_evals)
        ks = il.compare_explanations(lm, small, prompts, method="kernel_shap", n_samples=64)
    out["student"] = {"agreement": st.agreement, "kl": st.kl, "steps": args.steps, "train_seconds": round(train_s, 1),
                      "params": st.n_params, "heldout_tokens": st.diagnostics["heldout_tokens"],
                      "spearman_ig": ig.mean, "spearman_kernel_shap": ks.mean}
    print("student", json.dumps(out["student"]), flush=True)


if __name__ == "__main__":
    main()
