"""Counterfactual edits on the default model over the built-in evaluation set.

The default model (SmolLM2-135M from the bundled GGUF) classifies the 220 texts of
``interpretlm.counterfactual.evaluation`` (120 reviews, 100 texts on four topics) through
verbalizer tokens; the script prints its accuracy per task. On the first ``--n`` examples of
each task that it classifies correctly (labels interleaved), ``il.counterfactuals`` looks for
one edit that changes the predicted label (``n=1``, defaults otherwise, template words kept),
and the script prints, per task: flip rate, mean minimality (word Levenshtein / words, on
flipped examples), mean Δ perplexity, mean queries (model evaluations, the prompt included),
seconds per example, and three example edits.

With ``--cache-compare K`` it runs the first K examples again without the prefix cache
(``reuse_cache=False``), interleaved with the cached runs, and prints the token positions
computed and the wall-time ratio, measured in this process (absolute times are noisy on a
shared machine; the ratio of interleaved runs is the figure to quote).

Run:  PYTHONPATH=src python benchmarks/counterfactuals.py [--n 20] [--cache-compare 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import interpretlm as il
from interpretlm.counterfactual.evaluation import TASKS, evaluation_set
from interpretlm.targets import gather_at

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402


def predictions(lm, examples, batch_size: int = 32) -> list[str]:
    """The label each example's prompt gets through its verbalizers (one batched pass per chunk)."""
    target = examples[0].target.bind(lm)
    names = list(target.label_ids)
    out: list[str] = []
    with torch.no_grad():
        for s in range(0, len(examples), batch_size):
            chunk = examples[s:s + batch_size]
            o = lm.forward([e.prompt for e in chunk])
            logp = torch.log_softmax(gather_at(o.logits, o.batch.last_index).float(), -1)
            per = torch.stack([torch.logsumexp(logp[:, ids], -1) for ids in target.label_ids.values()], -1)
            out += [names[i] for i in per.argmax(-1).tolist()]
    return out


def interleave(examples):
    """Examples of each label in turn (so the first n hold every label)."""
    by: dict[str, list] = {}
    for e in examples:
        by.setdefault(e.label, []).append(e)
    out = []
    while any(by.values()):
        for k in list(by):
            if by[k]:
                out.append(by[k].pop(0))
    return out


def run(lm, ex, max_queries: int, reuse_cache: bool = True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        cf = il.counterfactuals(lm, ex.prompt, ex.target, keep=list(ex.keep), n=1, seed=0, max_queries=max_queries,
                                reuse_cache=reuse_cache, progress=False)
        return cf, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="correctly classified examples per task")
    ap.add_argument("--max-queries", type=int, default=1000)
    ap.add_argument("--cache-compare", type=int, default=0, help="examples also run without the prefix cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="merge the figures into this JSON file (see run_all.py)")
    args = ap.parse_args()
    if args.json:
        import os
        os.environ["INTERPRETLM_BENCH_JSON"] = args.json
    torch.set_num_threads(args.threads)
    lm = il.load()
    print(f"model {lm.name}, {args.threads} thread(s); counterfactuals with n=1, max_queries={args.max_queries}")
    print(f"{'task':<10} {'acc':>6} {'n':>3} {'flip rate':>9} {'minimality':>10} {'Δppl':>7} {'queries':>8} "
          f"{'q→flip':>7} {'s/ex':>6}")
    cache_runs = []
    for task in TASKS:
        examples = evaluation_set(task)
        pred = predictions(lm, examples)
        acc = sum(p == e.label for p, e in zip(pred, examples)) / len(examples)
        chosen = interleave([e for p, e in zip(pred, examples) if p == e.label])[:args.n]
        rows = []
        for k, ex in enumerate(chosen):
            print(f"  [{task} {k + 1}/{len(chosen)}] {ex.text!r}", file=sys.stderr, flush=True)
            if k < args.cache_compare:  # interleaved: plain, then cached, per example
                plain, tp = run(lm, ex, args.max_queries, reuse_cache=False)
                cached, tc = run(lm, ex, args.max_queries)
                cache_runs.append((tp, tc, plain.diagnostics["tokens_run"], cached.diagnostics["tokens_run"]))
                rows.append((ex, cached, tc))
            else:
                cf, t = run(lm, ex, args.max_queries)
                rows.append((ex, cf, t))
        flipped = [(ex, cf, t) for ex, cf, t in rows if cf.edits[0]["flipped"]]
        flip_rate = len(flipped) / len(rows)
        mini = statistics.mean(cf.edits[0]["minimality"] for _, cf, _ in flipped) if flipped else float("nan")
        dppl = statistics.mean(cf.edits[0]["delta_perplexity"] for _, cf, _ in flipped) if flipped else float("nan")
        queries = statistics.mean(cf.queries for _, cf, _ in rows)
        to_flip = statistics.mean(cf.edits[0]["queries"] for _, cf, _ in flipped) if flipped else float("nan")
        secs = statistics.mean(t for *_, t in rows)
        print(f"{task:<10} {acc:>6.3f} {len(rows):>3} {flip_rate:>9.3f} {mini:>10.3f} {dppl:>+7.2f} {queries:>8.1f} "
              f"{to_flip:>7.1f} {secs:>6.2f}")
        for key, value in (("accuracy", acc), ("flip_rate", flip_rate), ("minimality", mini), ("delta_ppl", dppl),
                           ("queries", queries), ("queries_to_flip", to_flip), ("seconds_per_example", secs)):
            record("counterfactuals", f"{task}_{key}", value)
        for ex, cf, _ in sorted(flipped, key=lambda r: r[1].edits[0]["distance"])[:3]:
            e = cf.edits[0]
            print(f"    {ex.text!r} ({ex.label}) -> {e['text'].splitlines()[0][len(ex.prompt.split(ex.text)[0]):]!r} "
                  f"({e['label']}, {e['kind']}, {e['distance']} word(s), {e['queries']} queries)")
    if cache_runs:
        tp, tc = sum(r[0] for r in cache_runs), sum(r[1] for r in cache_runs)
        kp, kc = sum(r[2] for r in cache_runs), sum(r[3] for r in cache_runs)
        print(f"prefix cache on {len(cache_runs)} examples: token positions {kc}/{kp} = {kc / kp:.3f}; "
              f"wall time {tc:.1f}/{tp:.1f} s = {tc / tp:.3f} (interleaved runs, same process)")
        record("counterfactuals", "cache_token_ratio", kc / kp)
        record("counterfactuals", "cache_time_ratio", tc / tp)


if __name__ == "__main__":
    main()
