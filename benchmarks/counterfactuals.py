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

With ``--fluency 0 1`` it runs the search without and with fluency ranking on the same
examples, interleaved (the before/after of fluency). With ``--peer textattack`` it runs
``_textattack_runner.py`` in the TextAttack venv instead: interpretlm and TextAttack 0.3.11
(``--recipes embedding,deepwordbug``) on the same correctly classified examples, the same
model and goal, interleaved in one process, and prints flip rate, minimality, queries and
seconds per example of each, and TextAttack's ratios over interpretlm.

Run:  PYTHONPATH=src python benchmarks/counterfactuals.py [--n 20] [--cache-compare 10] [--threads 2]
      PYTHONPATH=src python benchmarks/counterfactuals.py --peer textattack --n 100 --tasks sentiment,topic
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


def run(lm, ex, max_queries: int, reuse_cache: bool = True, fluency: float = 1.0, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        cf = il.counterfactuals(lm, ex.prompt, ex.target, keep=list(ex.keep), n=1, seed=0, max_queries=max_queries,
                                reuse_cache=reuse_cache, fluency=fluency, progress=False, **kw)
        return cf, time.perf_counter() - t


def correct_examples(lm, task: str, n: int) -> list:
    """The first ``n`` examples of ``task`` the model classifies correctly, labels interleaved."""
    examples = evaluation_set(task)
    pred = predictions(lm, examples)
    return interleave([e for p, e in zip(pred, examples) if p == e.label])[:n]


def names_a_label(ex, edit: dict) -> bool:
    """Whether the edit substitutes or inserts the verbalizer word of a label other than the example's."""
    others = {v.strip().lower() for k, vs in ex.target.verbalizers.items() if k != ex.label for v in vs}
    return any(op[0] in ("sub", "ins") and str(op[2]).strip().lower() in others for op in edit["ops"])


def label_substitutes(lm, args) -> None:
    """The frugal search with and without the other labels' words as substitutes (``label_substitutes=``),
    interleaved per example on the same correctly classified examples as ``--peer``: flip rate, minimality,
    Δ perplexity, queries, seconds, and the share of flipped edits that name another label."""
    print(f"model {lm.name}, {args.threads} thread(s); search='frugal', n=1, max_queries={args.max_queries}")
    print(f"{'task':<10} {'label words':<12} {'n':>3} {'flip rate':>9} {'minimality':>10} {'Δppl med':>8} "
          f"{'queries':>8} {'s/ex':>6} {'names label':>11}")
    for task in args.tasks.split(","):
        chosen = correct_examples(lm, task, args.n)
        rows: dict[bool, list] = {True: [], False: []}
        for k, ex in enumerate(chosen):
            for on in (True, False):
                cf, t = run(lm, ex, args.max_queries, search="frugal", label_substitutes=on)
                rows[on].append((ex, cf, t))
                e = cf.edits[0]
                print(f"  [{task} {k + 1}/{len(chosen)}] label words {on!s:<5} {edit_text(ex, e)!r} "
                      f"flipped={e['flipped']} q={cf.queries}", file=sys.stderr, flush=True)
        for on in (True, False):
            figures, _ = summarize(rows[on])
            flipped = [(ex, cf) for ex, cf, _ in rows[on] if cf.edits[0]["flipped"]]
            figures["names_label"] = (sum(names_a_label(ex, cf.edits[0]) for ex, cf in flipped) / len(flipped)
                                      if flipped else float("nan"))
            print(f"{task:<10} {'on' if on else 'off':<12} {len(rows[on]):>3} {figures['flip_rate']:>9.3f} "
                  f"{figures['minimality']:>10.3f} {figures['median_delta_ppl']:>+8.1f} {figures['queries']:>8.2f} "
                  f"{figures['seconds_per_example']:>6.2f} {figures['names_label']:>11.2f}")
            prefix = "frugal_" if on else "frugal_semantic_"
            for key in ("flip_rate", "minimality", "median_delta_ppl", "queries", "names_label"):
                record("counterfactuals", f"{prefix}{task}_{key}", figures[key])


def edit_text(ex, e) -> str:
    """The edited text without the template around it."""
    head = ex.prompt.split(ex.text)[0]
    return e["text"].splitlines()[0][len(head):] if e["text"].startswith(head) else e["text"]


def summarize(rows) -> tuple[dict[str, float], list[str]]:
    """Flip rate, minimality, Δ perplexity (flipped examples), queries, seconds per example; three example edits."""
    flipped = [(ex, cf, t) for ex, cf, t in rows if cf.edits[0]["flipped"]]
    nan = float("nan")
    figures = {
        "flip_rate": len(flipped) / len(rows),
        "minimality": statistics.mean(cf.edits[0]["minimality"] for _, cf, _ in flipped) if flipped else nan,
        "delta_ppl": statistics.mean(cf.edits[0]["delta_perplexity"] for _, cf, _ in flipped) if flipped else nan,
        "median_delta_ppl": statistics.median(cf.edits[0]["delta_perplexity"] for _, cf, _ in flipped) if flipped
        else nan,
        "queries": statistics.mean(cf.queries for _, cf, _ in rows),
        "queries_to_flip": statistics.mean(cf.edits[0]["queries"] for _, cf, _ in flipped) if flipped else nan,
        "seconds_per_example": statistics.mean(t for *_, t in rows),
    }
    shown = []
    for ex, cf, _ in sorted(flipped, key=lambda r: (r[1].edits[0]["distance"], r[1].edits[0]["delta_perplexity"]))[:3]:
        e = cf.edits[0]
        shown.append(f"{ex.text!r} ({ex.label}) -> {edit_text(ex, e)!r} ({e['label']}, {e['kind']}, "
                     f"{e['distance']} word(s), Δppl {e['delta_perplexity']:+.1f}, {e['queries']} queries)")
    return figures, shown


VENV = Path("/work/main/.bench-venvs/textattack/bin/python")


def peer(lm, args) -> None:
    """interpretlm and TextAttack on the same correctly classified examples, interleaved in one process of the
    TextAttack venv (``_textattack_runner.py``): flip rate, minimality, queries and seconds per example, ratios."""
    import json
    import os
    import subprocess
    import tempfile

    if not VENV.exists():
        print(f"TextAttack venv {VENV.parent.parent} missing: see benchmarks/README.md; skipped")
        return
    chosen = []
    for task in args.tasks.split(","):
        chosen += [(task, e.text) for e in correct_examples(lm, task, args.n)]
    recipes = args.recipes.split(",")
    job = {"threads": args.threads, "max_queries": args.max_queries, "fluency": args.fluency[-1], "recipes": recipes,
           "examples": chosen, "searches": args.search}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
    rows = []
    with subprocess.Popen([str(VENV), str(Path(__file__).parent / "_textattack_runner.py"), f.name], env=env,
                          stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if line.startswith("{"):
                r = json.loads(line)
                rows.append(r)
                if args.rows:
                    with open(args.rows, "a") as out:
                        out.write(line)
                print(f"  {r['task']} {r['method']:<24} flipped={r['flipped']!s:<5} q={r['queries']:<5} "
                      f"{r['seconds']:6.1f} s  {r['new_text'].splitlines()[0]!r}", file=sys.stderr, flush=True)
    print(f"model {lm.name}, {args.threads} thread(s), max_queries={args.max_queries}, TextAttack 0.3.11 recipes "
          f"{recipes}; both in one process, interleaved per example")
    # figures of a run with other searches than the beam go under their own prefix ("frugal_peer_...")
    prefix = "peer_" if args.search == ["beam"] else "_".join(args.search) + "_peer_"
    import os as _os
    record("counterfactuals", prefix + "load_average", _os.getloadavg()[0])
    print(f"{'task':<10} {'method':<24} {'n':>3} {'flip rate':>9} {'minimality':>10} {'Δppl':>7} {'queries':>8} "
          f"{'s/ex':>6}")
    shown: list[str] = []
    for task in args.tasks.split(","):
        done = {r["text"] for r in rows if r["task"] == task and r["method"] == f"textattack-{recipes[-1]}"}
        ours_methods = ["interpretlm" if s == "beam" else f"interpretlm-{s}" for s in args.search]
        if not done:
            continue
        figs = {}
        for method in ours_methods + [f"textattack-{r}" for r in recipes]:
            rs = [r for r in rows if r["task"] == task and r["method"] == method and r["text"] in done]
            flipped = [r for r in rs if r["flipped"]]
            figs[method] = {
                "examples": len(rs), "flip_rate": len(flipped) / len(rs),
                "minimality": statistics.mean(r["minimality"] for r in flipped) if flipped else float("nan"),
                "queries": statistics.mean(r["queries"] for r in rs),
                "seconds_per_example": statistics.mean(r["seconds"] for r in rs)}
            dp = [r["delta_perplexity"] for r in flipped if r.get("delta_perplexity") is not None]
            if dp:
                figs[method]["delta_ppl"] = statistics.mean(dp)
                figs[method]["median_delta_ppl"] = statistics.median(dp)
            m = figs[method]
            print(f"{task:<10} {method:<24} {m['examples']:>3} {m['flip_rate']:>9.3f} {m['minimality']:>10.3f} "
                  f"{m.get('delta_ppl', float('nan')):>+7.1f} {m['queries']:>8.1f} {m['seconds_per_example']:>6.2f}")
            for key, value in m.items():
                record("counterfactuals", f"{prefix}{task}_{method}_{key}", value)
        # three example edits per task: the first examples both sides flipped, ours and TextAttack's side by side
        ours_name = ours_methods[-1]
        by = {(r["text"], r["method"]): r for r in rows if r["task"] == task}
        both = [r["text"] for r in rows if r["task"] == task and r["method"] == ours_name and r["flipped"]
                and by.get((r["text"], f"textattack-{recipes[0]}"), {}).get("flipped")]
        for t in both[:2]:
            a, b = by[t, ours_name], by[t, f"textattack-{recipes[0]}"]
            shown.append(f"{t!r} → ours {a['new_text'].splitlines()[0].split(': ', 1)[-1]!r} ({a['label']}, "
                         f"{a['queries']} queries) / TextAttack {b['new_text'].splitlines()[0].split(': ', 1)[-1]!r} "
                         f"({b['label']}, {b['queries']} queries)")
        for name in ours_methods:
            ours = figs[name]
            suffix = "" if name == "interpretlm" else "_" + name.split("-", 1)[1]
            for method in [f"textattack-{r}" for r in recipes]:
                q = figs[method]["queries"] / ours["queries"]
                t = figs[method]["seconds_per_example"] / ours["seconds_per_example"]
                print(f"{task:<10} {method} / {name}: {q:.2f}× the queries, {t:.2f}× the seconds per example")
                record("counterfactuals", f"{prefix}{task}_{method}_query_ratio{suffix}", q)
                record("counterfactuals", f"{prefix}{task}_{method}_time_ratio{suffix}", t)
    for line in shown:
        print("  " + line)
    if shown and prefix != "peer_":
        record("counterfactuals", prefix + "example_edits", shown[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="correctly classified examples per task")
    ap.add_argument("--max-queries", type=int, default=1000)
    ap.add_argument("--cache-compare", type=int, default=0, help="examples also run without the prefix cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (sentiment, topic)")
    ap.add_argument("--fluency", type=float, nargs="+", default=[1.0],
                    help="fluency weights to run (e.g. 0 1: before/after on the same examples, interleaved)")
    ap.add_argument("--peer", choices=["textattack"], help="also run TextAttack 0.3 in its venv on the same examples")
    ap.add_argument("--rows", help="--peer: also append each example's JSON line to this file")
    ap.add_argument("--recipes", default="embedding", help="TextAttack recipes: embedding, deepwordbug (comma-separated)")
    ap.add_argument("--search", nargs="+", default=["beam"], choices=["beam", "guided", "frugal"],
                    help="--peer: interpretlm's search(es), each run on every example beside TextAttack")
    ap.add_argument("--label-substitutes", action="store_true",
                    help="the frugal search with and without the other labels' words as substitutes, same examples")
    ap.add_argument("--json", help="merge the figures into this JSON file (see run_all.py)")
    args = ap.parse_args()
    if args.json:
        import os
        os.environ["INTERPRETLM_BENCH_JSON"] = args.json
    torch.set_num_threads(args.threads)
    lm = il.load()
    if args.peer:
        return peer(lm, args)
    if args.label_substitutes:
        return label_substitutes(lm, args)
    print(f"model {lm.name}, {args.threads} thread(s); counterfactuals with n=1, max_queries={args.max_queries}")
    print(f"{'task':<10} {'acc':>6} {'n':>3} {'flip rate':>9} {'minimality':>10} {'Δppl':>7} {'queries':>8} "
          f"{'q→flip':>7} {'s/ex':>6}")
    cache_runs = []
    examples_out = []
    for task in args.tasks.split(","):
        examples = evaluation_set(task)
        pred = predictions(lm, examples)
        acc = sum(p == e.label for p, e in zip(pred, examples)) / len(examples)
        chosen = interleave([e for p, e in zip(pred, examples) if p == e.label])[:args.n]
        rows: dict[float, list] = {f: [] for f in args.fluency}
        for k, ex in enumerate(chosen):
            print(f"  [{task} {k + 1}/{len(chosen)}] {ex.text!r}", file=sys.stderr, flush=True)
            for f in args.fluency:  # interleaved per example: every setting sees the same load
                if k < args.cache_compare and f == args.fluency[-1]:  # plain, then cached
                    plain, tp = run(lm, ex, args.max_queries, reuse_cache=False, fluency=f)
                    cached, tc = run(lm, ex, args.max_queries, fluency=f)
                    cache_runs.append((tp, tc, plain.diagnostics["tokens_run"], cached.diagnostics["tokens_run"]))
                    rows[f].append((ex, cached, tc))
                else:
                    cf, t = run(lm, ex, args.max_queries, fluency=f)
                    rows[f].append((ex, cf, t))
                e = rows[f][-1][1].edits[0]
                print(f"    fluency {f:g}: {edit_text(ex, e)!r} flipped={e['flipped']} "
                      f"Δppl={e['delta_perplexity']:+.1f} q={rows[f][-1][1].queries}", file=sys.stderr, flush=True)
        for f in args.fluency:
            figures, shown = summarize(rows[f])
            name = task if f == 1.0 else f"{task} (fluency {f:g})"
            print(f"{name:<10} {acc:>6.3f} {len(rows[f]):>3} {figures['flip_rate']:>9.3f} {figures['minimality']:>10.3f} "
                  f"{figures['delta_ppl']:>+7.2f} {figures['queries']:>8.1f} {figures['queries_to_flip']:>7.1f} "
                  f"{figures['seconds_per_example']:>6.2f}")
            prefix = task if f == 1.0 else f"{task}_fluency{f:g}"
            record("counterfactuals", f"{prefix}_accuracy", acc)
            record("counterfactuals", f"{prefix}_examples", len(rows[f]))
            for key, value in figures.items():
                record("counterfactuals", f"{prefix}_{key}", value)
            for line in shown:
                print("    " + line)
            if f == 1.0:
                examples_out += shown
    if examples_out:
        record("counterfactuals", "example_edits", examples_out[:3])
    if cache_runs:
        tp, tc = sum(r[0] for r in cache_runs), sum(r[1] for r in cache_runs)
        kp, kc = sum(r[2] for r in cache_runs), sum(r[3] for r in cache_runs)
        print(f"prefix cache on {len(cache_runs)} examples: token positions {kc}/{kp} = {kc / kp:.3f}; "
              f"wall time {tc:.1f}/{tp:.1f} s = {tc / tp:.3f} (interleaved runs, same process)")
        record("counterfactuals", "cache_token_ratio", kc / kp)
        record("counterfactuals", "cache_time_ratio", tc / tp)
        record("counterfactuals", "cache_examples", len(cache_runs))


if __name__ == "__main__":
    main()
