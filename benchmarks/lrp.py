"""LRP benchmark: cost vs one forward+backward, LXT side by side, and deletion AOPC vs IG and saliency.

    PYTHONPATH=src .venv/bin/python benchmarks/lrp.py [--n 50] [--threads 1] [--repeats 5]

1. Cost: median wall time of ``il.attribute(..., method="lrp")`` over one plain
   forward+backward (gradient of the same logit w.r.t. the input embeddings), same prompt.
2. LXT 2.1 (AttnLRP, efficient mode), where /work/bench-venvs/lxt exists (it imports only
   with Transformers 4.52; see benchmarks/_lxt_runner.py): wall time ratio, conservation,
   and Spearman rank agreement of token relevances with ours on the same prompts.
3. Faithfulness: deletion AOPC (higher is better) of LRP, Integrated Gradients, saliency
   and a random order on ``--n`` built-in prompts (IOI-style and factual), explaining the
   model's top next token. Uses ``il.attribute`` methods "integrated_gradients" /
   "saliency" and ``il.faithfulness`` when they are installed, otherwise the local
   versions below (printed which).
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
import warnings
from pathlib import Path

import numpy as np
import torch

import interpretlm as il
from interpretlm.attribution import METHODS

LXT_PYTHON = Path("/work/bench-venvs/lxt/bin/python")
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


# ---------------------------------------------------------------------------------------- local methods
def _embeds(lm, ids):
    return lm.model.get_input_embeddings()(ids).detach()


def _logit_grad(lm, emb, mask, token):
    """``[steps, pos, d]`` gradient of the last position's ``token`` logit w.r.t. input embeddings."""
    emb = emb.clone().requires_grad_(True)
    out = lm.model(inputs_embeds=emb, attention_mask=mask, use_cache=False)
    (g,) = torch.autograd.grad(out.logits[:, -1, token].sum(), emb)
    return g


def local_saliency(lm, prompt, token):
    b = lm.tokenize(prompt)
    return _logit_grad(lm, _embeds(lm, b.input_ids), b.attention_mask, token)[0].norm(dim=-1).numpy()


def _fill_id(lm):
    return lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id


def local_integrated_gradients(lm, prompt, token, steps=32, batch_size=16):
    """Pad-token-embedding baseline (a zero embedding is degenerate under RMS norm: the norm
    undoes the scaling, so the path is flat until it collapses near zero), midpoint Riemann
    sum; returns ``[pos]`` and the completeness error."""
    b = lm.tokenize(prompt)
    x = _embeds(lm, b.input_ids)
    base = _embeds(lm, torch.full_like(b.input_ids, _fill_id(lm)))
    emb = x - base
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    total = torch.zeros_like(emb[0])
    for s in range(0, steps, batch_size):
        a = alphas[s:s + batch_size].view(-1, 1, 1)
        g = _logit_grad(lm, base + a * emb, b.attention_mask.expand(len(a), -1), token)
        total += g.sum(0)
    scores = (emb[0] * total / steps).sum(-1)
    with torch.no_grad():
        f = lm.model(inputs_embeds=torch.cat([x, base]), attention_mask=b.attention_mask.expand(2, -1),
                     use_cache=False).logits[:, -1, token]
    err = abs(float(scores.sum()) - float(f[0] - f[1])) / max(abs(float(f[0] - f[1])), 1e-12)
    return scores.numpy(), err


def _library_scores(lm, prompt, target, method):
    if method not in METHODS:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = il.attribute(lm, prompt, target, method=method)
        s = np.asarray(r.scores, dtype=float)
        return s if s.ndim == 1 and len(s) == len(lm.tokenize(prompt).tokens[0]) else None
    except Exception as exc:  # an interface mismatch: fall back to the local version, say so
        print(f"  (il.attribute method={method!r} failed: {exc}; using the local version)")
        return None


def deletion_aopc(lm, prompt, token, scores, fraction=0.3):
    """Deletion AOPC: mean drop of p(token) as the top-k tokens (k = 0..K) are replaced by the pad token.

    ``K = ceil(fraction · (n - 1))``: only the top of the ranking is probed (deleting most of
    a short prompt destroys any prediction, whatever the order). The last token (where the
    prediction is read) is never deleted.
    """
    b = lm.tokenize(prompt)
    ids = b.input_ids[0]
    n = len(ids)
    order = [int(i) for i in np.argsort(-np.asarray(scores[: n - 1]), kind="stable")]
    k_max = max(1, int(np.ceil(fraction * (n - 1))))
    fill = _fill_id(lm)
    rows = ids.repeat(k_max + 1, 1)
    for k in range(1, k_max + 1):
        rows[k, order[:k]] = fill
    with torch.no_grad():
        p = torch.softmax(lm.model(input_ids=rows, use_cache=False).logits[:, -1].float(), -1)[:, token]
    return float((p[0] - p).mean())


def _aopc(lm, prompt, token, scores):
    fn = getattr(il.attribution, "faithfulness", None)
    if fn is not None:
        try:
            out = fn(lm, prompt, il.NextToken(token, kind="logit"), scores=scores, metric="deletion_aopc")
            value = getattr(out, "deletion_aopc", None) or (out.get("deletion_aopc") if isinstance(out, dict) else None)
            if value is not None:
                return float(value), "il.faithfulness"
        except Exception:
            pass
    return deletion_aopc(lm, prompt, token, scores), "local"


# ---------------------------------------------------------------------------------------- parts
def cost(lm, prompt, repeats):
    b = lm.tokenize(prompt)
    token = int(lm.forward(b).logits[0, -1].argmax())
    target = il.NextToken(token, kind="logit")

    def plain():
        _logit_grad(lm, _embeds(lm, b.input_ids), b.attention_mask, token)

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
    ap.add_argument("--ig-steps", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    lm = il.load()
    lm.model.requires_grad_(False)
    ioi = "When Mary and John went to the store, John gave a drink to"

    print(f"== cost ({args.threads} thread(s), median of {args.repeats})")
    t_plain, t_lrp = cost(lm, ioi, args.repeats)
    print(f"plain forward+backward {t_plain:.3f} s, LRP {t_lrp:.3f} s: ratio {t_lrp / t_plain:.2f}x (goal <= 2x)")

    prompts = builtin_prompts(args.n)
    ours, ours_abs, tokens = [], [], []
    for p in prompts:
        b = lm.tokenize(p)
        tok = int(lm.forward(b).logits[0, -1].argmax())
        tokens.append(tok)
        ours.append(il.attribute(lm, p, il.NextToken(tok, kind="logit"), method="lrp"))
        ours_abs.append(il.attribute(lm, p, il.NextToken(tok, kind="logit"), method="lrp",
                                     attention_rule="attnlrp-absorbing"))
    r = ours[0]
    print(f"\n== conservation on {ioi!r} -> {lm.tokenizer.decode([tokens[0]])!r}: logit {r.target_value:.2f}, input "
          f"relevance {r.diagnostics['input_relevance']:.2f}, error {r.conservation_error:.3%} "
          f"(published softmax rule: {ours_abs[0].diagnostics['input_relevance']:.2f}, "
          f"error {ours_abs[0].conservation_error:.1%})")
    print(f"mean conservation error over {len(prompts)} prompts: ours {np.mean([x.conservation_error for x in ours]):.3%}, "
          f"published rule {np.mean([x.conservation_error for x in ours_abs]):.1%}")

    print("\n== LXT 2.1 (AttnLRP, efficient mode)")
    if LXT_PYTHON.exists():
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
            print(f"Spearman rank agreement with LXT (same top token on {sum(same)}/{len(same)} prompts): "
                  f"ours (default rule) {np.mean(rho):.3f}, ours with the published softmax rule {np.mean(rho_abs):.4f}")
    else:
        print(f"not installed ({LXT_PYTHON} missing): LXT 2.1 needs Transformers 4.52; see benchmarks/_lxt_runner.py")

    print(f"\n== deletion AOPC on {len(prompts)} built-in prompts (p(top token), top 30% of tokens replaced by the pad "
          "token one by one; higher = more faithful)")
    rng = np.random.default_rng(0)
    aopc: dict[str, list[float]] = {"LRP (attnlrp, default)": [], "LRP (attnlrp-absorbing, as LXT)": [],
                                    "LRP (cp)": [], "Integrated Gradients": [], "saliency": [], "random": []}
    used, ig_errs = set(), []
    for p, tok, r, r_abs in zip(prompts, tokens, ours, ours_abs):
        target = il.NextToken(tok, kind="logit")
        ig = _library_scores(lm, p, target, "integrated_gradients")
        if ig is None:
            ig, e = local_integrated_gradients(lm, p, tok, steps=args.ig_steps)
            ig_errs.append(e)
            used.add("local IG")
        sal = _library_scores(lm, p, target, "saliency")
        if sal is None:
            sal = local_saliency(lm, p, tok)
            used.add("local saliency")
        cp = il.attribute(lm, p, target, method="lrp", attention_rule="cp").scores
        for name, s in (("LRP (attnlrp, default)", r.scores), ("LRP (attnlrp-absorbing, as LXT)", r_abs.scores),
                        ("LRP (cp)", cp), ("Integrated Gradients", ig),
                        ("saliency", sal), ("random", rng.random(len(r.scores)))):
            v, how = _aopc(lm, p, tok, np.asarray(s, dtype=float))
            used.add(f"{how} AOPC")
            aopc[name].append(v)
    rand = np.asarray(aopc["random"])
    print(f"{'method':<32} {'AOPC':>8} {'± s.e.':>8}   {'minus random (paired)':>22}")
    for name, vals in aopc.items():
        v = np.asarray(vals)
        d = v - rand
        print(f"{name:<32} {v.mean():8.4f} {v.std() / np.sqrt(len(v)):8.4f}   {d.mean():+10.4f} ± {d.std() / np.sqrt(len(d)):.4f}")
    print("used:", ", ".join(sorted(used)) + (f"; IG completeness error median {np.median(ig_errs):.1%}, mean {np.mean(ig_errs):.1%}"
                                           if ig_errs else ""))


if __name__ == "__main__":
    main()
