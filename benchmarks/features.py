"""Feature dictionaries on the default model: a TopK SAE trained on the built-in corpus within a CPU budget.

Run by hand (not a test):

    PYTHONPATH=src .venv/bin/python benchmarks/features.py                        # the README's run
    PYTHONPATH=src .venv/bin/python benchmarks/features.py --tokens 20000         # a short one

Trains ``--n-features`` features (k active) on ``--component`` over ``--tokens`` tokens of the
built-in corpus (the KJV; the first ``--eval-windows`` windows held out), then reports the
dictionary's metrics (fraction of variance unexplained, L0, dead fraction, cross-entropy loss
recovered against zero ablation), the wall time split into the model's forward passes and the
dictionary's optimizer steps, and tokens per second. Times are on a shared 2-core machine: noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

import interpretlm as il

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402  (figures for run_all.py / results.json)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--component", default="blocks.9.resid_post")
    ap.add_argument("--n-features", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--eval-windows", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 avoids spin-waits under load)")
    ap.add_argument("--path", default=None, help="folder for checkpoints and the dictionary (resumes)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = il.load(args.model)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = il.features.train(lm, args.component, corpus="builtin", n_features=args.n_features, k=args.k,
                                tokens=args.tokens, eval_windows=args.eval_windows, path=args.path)
    wall = time.perf_counter() - t
    m = sae.metrics
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}, indent=1))
    print(f"{args.component}: {args.n_features} features, k={args.k}, {m['tokens']} tokens in {m['seconds']:.0f} s "
          f"of training ({m['cpu_seconds']:.0f} s of CPU; {m['tokens'] / m['seconds']:.0f} tokens/s), {wall:.0f} s with "
          "the evaluation")
    sec = f"features.{args.model}"
    for key in ("fvu", "l0", "dead_fraction", "ce_loss_recovered", "ce_clean", "ce_spliced", "ce_zero_ablated",
                "tokens", "seconds", "cpu_seconds"):
        record(sec, key, round(float(m[key]), 4))
    record(sec, "n_features", args.n_features)
    record(sec, "k", args.k)
    record(sec, "component", args.component)


if __name__ == "__main__":
    main()
