"""Feature dictionaries on the default model: a TopK SAE trained on the built-in corpus within a CPU budget.

Run by hand (not a test):

    PYTHONPATH=src .venv/bin/python benchmarks/features.py                        # the README's run
    PYTHONPATH=src .venv/bin/python benchmarks/features.py --tokens 20000         # a short one

Trains ``--n-features`` features (k active) on ``--component`` over ``--tokens`` tokens of the
built-in corpus (the KJV; the first ``--eval-windows`` windows held out), then reports the
dictionary's metrics (fraction of variance unexplained, L0, dead fraction, cross-entropy loss
recovered against zero ablation), the wall time split into the model's forward passes and the
dictionary's optimizer steps, and tokens per second. Then the dictionary's best feature for a concept
(sentences about the sea against other sentences) beside difference-in-means and a logistic probe:
held-out detection AUROC, and steering at 0, 1/4, 1/2 and 1 times the component's typical norm.
Times are on a shared 2-core machine: noisy (CPU seconds are steadier than wall time).
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


# the concept set of the baselines comparison: sentences about the sea against sentences about other things
SEA = ["The waves crashed against the rocks of the shore.", "Fishermen sailed their boats across the sea at dawn.",
       "The ocean was calm and blue under the sky.", "A ship drifted far from the harbour on the tide.",
       "We swam in the salty water near the beach.", "The sailors feared the storm on the open sea.",
       "Seagulls circled above the fishing boats in the bay.", "The tide came in and covered the sand.",
       "Whales rose from the deep ocean to breathe.", "The captain steered the vessel through the waves.",
       "Coral reefs lie beneath the warm tropical sea.", "The lighthouse guided ships along the coast.",
       "Salt spray blew over the deck of the boat.", "The divers explored a wreck on the sea floor.",
       "Dolphins swam beside the ferry in the harbour.", "The fleet set sail across the wide ocean."]
OTHER = ["The children read books in the quiet library.", "She baked bread in the kitchen this morning.",
         "The train left the station at nine o'clock.", "He planted tomatoes in the garden behind the house.",
         "The students solved the problem on the blackboard.", "Our team won the football match on Sunday.",
         "The doctor examined the patient carefully.", "They built a new road through the mountains.",
         "The painter finished the portrait of the king.", "A farmer harvested wheat in the dry field.",
         "The city council met to discuss the budget.", "The musician tuned his guitar before the concert.",
         "My neighbour repaired the roof of his barn.", "The market sold apples, cheese and honey.",
         "The judge read the verdict to the court.", "Snow covered the forest in the mountains."]


def baselines(lm, sae) -> None:
    """Concept detection and steering: the SAE's best feature beside difference-in-means and a probe."""
    with lm.capture([sae.component]) as cache:
        lm.forward(OTHER[0])
    norm = float(cache[sae.component][0, 1:].norm(dim=-1).mean())      # typical residual norm at the component
    strengths = [0.0, 0.25 * norm, 0.5 * norm, 1.0 * norm]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = il.features.compare_to_baselines(lm, sae, SEA, OTHER, strengths=strengths,
                                             prompts=["I think that", "Yesterday my friend told me"],
                                             max_new_tokens=12)
    print(f"residual norm {norm:.1f}; strengths {[round(s, 1) for s in strengths]}; concept {r.concept}")
    print("detection AUROC (held out):", {k: round(v, 3) for k, v in r.detection.items()},
          f"best feature {r.best_feature}")
    for name, curve in r.steering.items():
        print(f"  {name:14s} concept rate {[round(x, 3) for x in curve['concept_rate']]}  "
              f"perplexity {[round(x, 1) for x in curve['perplexity']]}")
        for i, s in enumerate(strengths):
            record("features", f"steer.{name}.{i}.concept_rate", curve["concept_rate"][i])
            record("features", f"steer.{name}.{i}.perplexity", curve["perplexity"][i])
    for k, v in r.detection.items():
        record("features", f"detect.{k}", round(v, 4))


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
    ap.add_argument("--baselines-only", action="store_true",
                    help="load the dictionary at --path and run only the concept comparison")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = il.load(args.model)
    if args.baselines_only:
        baselines(lm, il.features.load(args.path))
        return
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
    for key in ("fvu", "l0", "dead_fraction", "ce_loss_recovered", "ce_clean", "ce_spliced", "ce_zero_ablated",
                "tokens", "seconds", "cpu_seconds"):
        record("features", f"{args.model}.{key}", round(float(m[key]), 4))
    record("features", f"{args.model}.n_features", args.n_features)
    record("features", f"{args.model}.k", args.k)
    record("features", f"{args.model}.component", args.component)
    baselines(lm, sae)


if __name__ == "__main__":
    main()
