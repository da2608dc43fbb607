"""LRP benchmark: cost vs one forward+backward, LXT side by side, and deletion AOPC vs IG and saliency.

    PYTHONPATH=src .venv/bin/python benchmarks/lrp.py [--n 50] [--threads 1] [--repeats 5]
        [--aopc-only] [--rules attnlrp,attnlrp-absorbing,...] [--no-baselines]

1. Cost: median wall time of ``il.attribute(..., method="lrp")`` over one plain
   forward+backward (gradient of the same logit w.r.t. the input embeddings), same prompt.
2. LXT 2.1 (AttnLRP, efficient mode), where /work/bench-venvs/lxt exists (it imports only
   with Transformers 4.52; see benchmarks/_lxt_runner.py): wall time ratio, conservation,
   and Spearman rank agreement of token relevances with ours on the same prompts.
3. Faithfulness: deletion AOPC (higher is better) of every LRP attention rule (``--rules``),
   Integrated Gradients, saliency (not with ``--no-baselines``) and a random order on ``--n``
   built-in prompts (IOI-style and factual), explaining the model's top next token: every
   method through ``il.attribute`` and every AOPC through the attribution family's
   ``il.faithfulness`` (``--aopc-only`` runs just this part). Each method's AOPC minus the
   random order's on the same prompt is summarised as mean ± sd (and s.e.); the random orders
   are drawn in prompt order from one seed, so separate runs with different ``--rules`` pair.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402  (figures for run_all.py / results.json)

import numpy as np
import torch
from tqdm import tqdm

import interpretlm as il
from interpretlm.attribution.lrp_rules import ATTENTION_RULES

# the LXT venv: with the other peers under .bench-venvs/, or where it was first built
LXT_PYTHON = next((p for p in (Path("/work/main/.bench-venvs/lxt/bin/python"), Path("/work/bench-venvs/lxt/bin/python"))
                   if p.exists()), Path("/work/main/.bench-venvs/lxt/bin/python"))
NAMES = [" Mary", " John", " Tom", " Anna", " Alice", " Bob", " James", " Sarah", " David", " Emma"]
PLACES = ["store", "park", "school", "office", "beach", "museum", "market", "library"]
OBJECTS = ["drink", "book", "ball", "letter", "gift", "key", "ticket", "sandwich"]
FACTS = [
    "The capital of France is", "The capital of Japan is", "The capital of Italy is", "The capital of Germany is",
    "The capital of Spain is", "The capital of Russia is", "The capital of Egypt is", "The capital of Canada is",
    "The Eiffel Tower is in the city of", "The Colosseum is in the city of", "The currency of Japan is the",
    "Water is made of hydrogen and", "The opposite of hot is", "The first president of the United States was George",
    "One, two, three, four,", "Monday, Tuesday, Wednesday,", "The sun rises in the", "Cats say meow and dogs say",
    "The largest planet in our solar system is", "Paris is the capital of", "The chemical symbol for gold is",
    "Shakespeare wrote Romeo and", "The Great Wall is in", "Ice is frozen", "A week has seven",
]


def builtin_prompts(n: int) -> list[str]:
    """``n`` prompts: half IOI-style (two names, the second repeated), half factual recall."""
    ioi = []
    for i in range(max(0, n - n // 2)):
        a, b = NAMES[i % len(NAMES)], NAMES[(i * 3 + 1) % len(NAMES)]
        if a == b:
            b = NAMES[(i + 5) % len(NAMES)]
        ioi.append(f"When{a} and{b} went to the {PLACES[i % len(PLACES)]},{b} gave a "
                   f"{OBJECTS[(i // 2) % len(OBJECTS)]} to")
    facts = [FACTS[i % len(FACTS)] for i in range(n // 2)]
    return ioi + facts


# ---------------------------------------------------------------------------------------- faithfulness
def deletion_aopc(lm, attribution) -> float:
    """Deletion AOPC of an attribution, from the attribution family's ``il.faithfulness``."""
    return float(il.faithfulness(lm, attribution).scores["deletion_aopc"])


# ---------------------------------------------------------------------------------------- parts
def cost(lm, prompt, repeats):
    b = lm.tokenize(prompt)
    token = int(lm.forward(b).logits[0, -1].argmax())
    target = il.NextToken(token, kind="logit")

    def plain():  # one forward and one backward pass of the explained logit: what LRP is measured against
        embeds = lm.model.get_input_embeddings()(b.input_ids).detach().requires_grad_(True)
        lm.forward(b, inputs_embeds=embeds, grad=True).logits[0, -1, token].backward()

    def lrp():
        il.attribute(lm, prompt, target, method="lrp")

    times = {"plain": [], "lrp": []}
    for f in (plain, lrp):
        f()  # warm up
    for _ in range(repeats):
        for name, f in (("plain", plain), ("lrp", lrp)):
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return statistics.median(times["plain"]), statistics.median(times["lrp"])


def _spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--aopc-only", action="store_true", help="skip the cost and LXT parts")
    ap.add_argument("--rules", default=",".join(ATTENTION_RULES),
                    help="comma-separated LRP attention rules scored by deletion AOPC (default: all)")
    ap.add_argument("--no-baselines", action="store_true", help="AOPC of the LRP rules and random order only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    lm = il.load()
    lm.model.requires_grad_(False)
    ioi = "When Mary and John went to the store, John gave a drink to"

    if not args.aopc_only:
        print(f"== cost ({args.threads} thread(s), median of {args.repeats})")
        t_plain, t_lrp = cost(lm, ioi, args.repeats)
        print(f"plain forward+backward {t_plain:.3f} s, LRP {t_lrp:.3f} s: ratio {t_lrp / t_plain:.2f}x (goal <= 2x)")
        record("lrp", "cost_ratio", t_lrp / t_plain)

    prompts = builtin_prompts(args.n)
    ours, ours_abs, tokens = [], [], []
    for p in prompts:
        b = lm.tokenize(p)
        tok = int(lm.forward(b).logits[0, -1].argmax())
        tokens.append(tok)
        ours.append(il.attribute(lm, p, il.NextToken(tok, kind="logit"), method="lrp", attention_rule="attnlrp"))
        ours_abs.append(il.attribute(lm, p, il.NextToken(tok, kind="logit"), method="lrp",
                                     attention_rule="attnlrp-absorbing"))
    r = ours[0]
    print(f"\n== conservation on {ioi!r} -> {lm.tokenizer.decode([tokens[0]])!r}: logit {r.target_value:.2f}, input "
          f"relevance {r.diagnostics['input_relevance']:.2f}, error {r.conservation_error:.3%} (conserving rule "
          f"attnlrp; published softmax rule, the default: {ours_abs[0].diagnostics['input_relevance']:.2f}, "
          f"error {ours_abs[0].conservation_error:.1%}, absorbed {ours_abs[0].diagnostics['absorbed_share']:.1%}, "
          f"check {ours_abs[0].check})")
    print(f"mean conservation error over {len(prompts)} prompts: attnlrp {np.mean([x.conservation_error for x in ours]):.3%}, "
          f"published rule {np.mean([x.conservation_error for x in ours_abs]):.1%} (counting what it books as absorbed: "
          f"{np.mean([x.diagnostics['ledger_error'] for x in ours_abs]):.2e})")
    record("lrp", "ioi.conservation_error", r.conservation_error)

    if args.aopc_only:
        pass
    elif LXT_PYTHON.exists():
        print("\n== LXT 2.1 (AttnLRP, efficient mode)")
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(prompts, fh)
        model_dir = next(il.cache_dir().glob("gguf/smollm2-135m-*"))
        out = subprocess.run([str(LXT_PYTHON), str(Path(__file__).with_name("_lxt_runner.py")), str(model_dir), fh.name,
                              str(args.repeats), str(args.threads)], capture_output=True, text=True)
        os.unlink(fh.name)
        if out.returncode != 0:
            print("LXT run failed:", out.stderr[-1500:])
        else:
            lxt = json.loads(out.stdout.strip().splitlines()[-1])
            res = lxt["results"]
            errs = [abs(sum(x["relevance"]) - x["logit"]) / abs(x["logit"]) for x in res]
            same = [x["token"] == t for x, t in zip(res, tokens)]
            rho = [_spearman(np.asarray(x["relevance"]), np.asarray(o.scores)) for x, o in zip(res, ours)]
            rho_abs = [_spearman(np.asarray(x["relevance"]), np.asarray(o.scores)) for x, o in zip(res, ours_abs)]
            print(f"IOI prompt: LXT {lxt['lxt_seconds']:.3f} s (its plain forward+backward {lxt['plain_seconds']:.3f} s); "
                  f"ours {t_lrp:.3f} s: wall-time ratio ours/LXT {t_lrp / lxt['lxt_seconds']:.2f}")
            print(f"each over its own plain forward+backward in its own process (robust to machine load): "
                  f"LXT {lxt['lxt_seconds'] / lxt['plain_seconds']:.2f}x, ours {t_lrp / t_plain:.2f}x")
            print(f"LXT input relevance on IOI {sum(res[0]['relevance']):.2f} of logit {res[0]['logit']:.2f} "
                  f"(error {errs[0]:.1%}); mean error over {len(res)} prompts {np.mean(errs):.1%}")
            record("lrp", "lxt.ioi.conservation_error", errs[0])
            print(f"Spearman rank agreement with LXT (same top token on {sum(same)}/{len(same)} prompts): "
                  f"ours with attnlrp {np.mean(rho):.3f}, ours with the published softmax rule (default) {np.mean(rho_abs):.4f}")
    else:
        print(f"not installed ({LXT_PYTHON} missing): LXT 2.1 needs Transformers 4.52; see benchmarks/_lxt_runner.py")

    print(f"\n== deletion AOPC on {len(prompts)} built-in prompts (il.faithfulness: mean drop of the top token's logit "
          "as tokens are removed in attribution order; higher = more faithful)")
    rng = np.random.default_rng(0)
    rules = [x.strip() for x in args.rules.split(",") if x.strip()]
    default_rule = il.method("lrp").options["attention_rule"].default
    label = {rule: f"LRP ({rule}{', default' if rule == default_rule else ''})" for rule in rules}
    aopc: dict[str, list[float]] = {label[rule]: [] for rule in rules}
    if not args.no_baselines:
        aopc.update({"Integrated Gradients": [], "saliency": []})
    aopc["random"] = []
    ig_errs = []
    for p, tok, r in tqdm(list(zip(prompts, tokens, ours)), desc="AOPC", disable=None):
        target = il.NextToken(tok, kind="logit")
        results = {label[rule]: il.attribute(lm, p, target, method="lrp", attention_rule=rule) for rule in rules}
        if not args.no_baselines:
            ig = il.attribute(lm, p, target, method="integrated_gradients")
            ig_errs.append(ig.completeness_error)
            results.update({"Integrated Gradients": ig, "saliency": il.attribute(lm, p, target, method="saliency")})
        # the same random order for every run of the benchmark (one draw per prompt, in prompt order)
        results["random"] = dataclasses.replace(r, scores=rng.random(len(r.scores)))
        for name, attribution in results.items():
            aopc[name].append(deletion_aopc(lm, attribution))
    rand = np.asarray(aopc["random"])
    print(f"{'method':<36} {'AOPC':>8} {'± s.e.':>8}   {'minus random (paired): mean ± sd, ± s.e.':>40}")
    for name, vals in aopc.items():
        v = np.asarray(vals)
        d = v - rand
        print(f"{name:<36} {v.mean():8.4f} {v.std() / np.sqrt(len(v)):8.4f}   {d.mean():+10.4f} ± {d.std():.4f} sd, "
              f"± {d.std() / np.sqrt(len(d)):.4f} s.e.")
    print("per-prompt AOPC (JSON):", json.dumps({k: [round(x, 5) for x in v] for k, v in aopc.items()}))
    if ig_errs:
        print(f"AOPC from il.faithfulness; IG completeness error median {np.median(ig_errs):.2%}, "
              f"max {np.max(ig_errs):.2%}")


if __name__ == "__main__":
    main()
