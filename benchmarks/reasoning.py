"""Chain-of-thought analysis (issue 15): cost of answer forcing, and the tests' metrics on a model.

* cost: early answering over a CoT of S sentences with the shared key/value cache (the prefix
  pass included) against one forward pass over the full CoT, and against the naive S + 1 full
  passes per choice; medians of ``--rounds``, ratios measured within this process (absolute
  times are noisy on a shared machine). Also the generated and scored tokens of every test.
* no_cot: accuracy without CoT over the whole built-in sets, cloze-style (the question alone, then
  "Answer:") and forced after the CoT prompt's listed choices, with the share of first choices.
* accuracy: accuracy with and without CoT on the built-in sets (``--n`` questions each, default
  all; the sets' prefixes are balanced), with standard errors over questions. With CoT by greedy
  decoding (``--temperature 0``, as Wei et al. 2022 report), one chain of thought a question; without
  CoT by standard few-shot prompting (the same worked examples, answers only) and zero-shot cloze.
* tests: each test's metric with its standard error over questions (the first ``--n-tests`` questions
  of each of ``--test-sets``, pooled; mistakes and paraphrases by the rule-based generator).
Figures are recorded per model under ``reasoning.<tag>.*`` (``smollm2``, ``qwen2``).

    PYTHONPATH=src .venv/bin/python benchmarks/reasoning.py [--model smollm2-135m] [--n 20] [--n-tests 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402

import interpretlm as il  # noqa: E402
from interpretlm.reasoning.engine import Body, Forcer, model_call  # noqa: E402

COT = ("Tom starts with 3 apples. He buys 4 more apples at the store. Now we add the two numbers. "
       "3 plus 4 is 7. So Tom has 7 apples in total. We check the sum again. 7 is one of the choices. "
       "The answer is 7.")


def median_seconds(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cost(lm, rounds: int) -> None:
    q = il.reasoning.Question("Tom has 3 apples and buys 4 more. How many apples does he have?",
                              choices=["6", "7", "8", "9"], answer="7")
    # zero-shot: the cost figures measure the forcing of one question's reasoning, not the worked examples
    run = il.reasoning.from_texts(lm, q, [COT + "\nAnswer: 7"], shots=0)
    body = Body.of(lm, run.reasoning[0])
    S = len(body.sentences)
    full_ids = torch.tensor([run.prompt_ids + body.ids])
    with torch.no_grad():
        t_full = median_seconds(lambda: model_call(lm, full_ids), rounds)

    def early():
        f = Forcer(lm, run.prompt_ids, body.ids, run.candidates)
        f.score([(c, []) for c in body.cuts])
        return f
    t_early = median_seconds(early, rounds)
    f = early()
    naive = Forcer(lm, run.prompt_ids, body.ids, run.candidates)
    t_naive = median_seconds(lambda: naive.score_naive([(c, []) for c in body.cuts]), 1)
    naive_tokens = naive.tokens_run
    print(f"early answering over S={S} sentences ({full_ids.shape[1]} tokens with the prompt): "
          f"{t_early / t_full:.2f}x one full pass (cached, prefix included), naive {t_naive / t_full:.1f}x; "
          f"tokens run {f.tokens_run} vs naive {naive_tokens}")
    record("reasoning", "early_answering_vs_one_pass", t_early / t_full)
    record("reasoning", "naive_early_answering_vs_one_pass", t_naive / t_full)
    record("reasoning", "early_answering_sentences", S)
    record("reasoning", "early_answering_tokens_run", f.tokens_run)
    record("reasoning", "full_pass_tokens", int(full_ids.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = il.reasoning.faithfulness(lm, run, progress=False)
    toks = {k: v for k, v in t.diagnostics.items() if k.endswith("_tokens")}
    print("tokens per test:", toks)
    for k, v in toks.items():
        record("reasoning", f"tokens.{k}", v)
    print(f"KV reuse error (relative, forced answers vs full passes): {t.diagnostics['kv_reuse_error']:.1e}")
    record("reasoning", "kv_reuse_error", t.diagnostics["kv_reuse_error"])


def no_cot(lm, tag: str) -> None:
    """Accuracy without CoT over whole sets: cloze-style (the question alone) and after the CoT prompt's listed
    choices, with how often the listed prompt's answer is the first choice (as chain_of_thought computes them)."""
    from interpretlm.reasoning.cot import no_cot_logprobs
    from interpretlm.reasoning.engine import prompt_ids, user_message

    for name in il.reasoning.SETS:
        t = time.perf_counter()
        qs = il.reasoning.builtin(name)
        cloze, listed, first = [], [], []
        for q in qs:
            ids, _, _ = prompt_ids(lm, user_message(q), True)
            lp = Forcer(lm, ids, [], list(q.choices)).score([(0, [])])[0]
            listed.append(float(q.choices[int(lp.argmax())] == q.answer))
            first.append(float(int(lp.argmax()) == 0))
            cloze.append(float(q.choices[int(no_cot_logprobs(lm, q, list(q.choices), True).argmax())] == q.answer))
        chance = statistics.mean(1 / len(q.choices) for q in qs)
        for key, vals in (("accuracy_no_cot", cloze), ("accuracy_no_cot_listed", listed),
                          ("first_choice_no_cot_listed", first)):
            m, se = statistics.mean(vals), statistics.stdev(vals) / len(vals) ** 0.5
            print(f"{tag} {name:<12} whole set n={len(qs)}: {key} {m:.3f} ± {se:.3f} (chance {chance:.3f})", flush=True)
            record("reasoning", f"{tag}.{name}.whole.{key}", m)
            record("reasoning", f"{tag}.{name}.whole.{key}_se", se)
        record("reasoning", f"{tag}.{name}.whole.n", len(qs))
        record("reasoning", f"{tag}.{name}.chance", chance)
        print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)


def keep_texts(path: str | None) -> None:
    """Append each question's chains of thought, answers and how they were read to ``path`` (JSONL), so the
    figures can be traced to what the model wrote."""
    if not path:
        return
    import json

    ev_module = sys.modules["interpretlm.reasoning.evaluate"]  # the package's name ``evaluate`` is the function

    elicit = ev_module.elicit

    def kept(lm, q, **kw):
        run = elicit(lm, q, **kw)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"model": lm.name, "id": q.id, "question": q.text, "choices": list(q.choices),
                                "gold": q.answer, "texts": run.texts, "answers": run.answers, "paths": run.paths,
                                "correct": run.correct, "no_cot": run.diagnostics["accuracy_no_cot"]}) + "\n")
        return run

    ev_module.elicit = kept


def accuracy(lm, tag: str, n: int | None, samples: int, max_new_tokens: int, batch: int, shots: int,
             sets: list[str], temperature: float, split: str = "sets") -> None:
    """Accuracy with and without CoT per set; ``split="dev"``: on the development split instead (recorded
    under ``<tag>.dev_t<temperature>.<set>``), where prompts and comparators are chosen."""
    from interpretlm.reasoning.sets import development

    dev = development() if split == "dev" else {}
    for name in sets:
        t = time.perf_counter()
        if split == "dev" and name not in dev:
            continue  # commonsense has no development questions
        qs = [il.reasoning.Question.from_dict(r) for r in dev[name]][:n] if dev else il.reasoning.builtin(name, n=n)
        tag_name = f"dev_t{temperature:g}.{name}" if dev else name  # dev: one record per temperature compared
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ev = il.reasoning.evaluate(lm, qs, tests=[], samples=samples, max_new_tokens=max_new_tokens,
                                       temperature=temperature, generator="rule", batch=batch, shots=shots,
                                       progress=False)
        m, se = ev.mean, ev.stderr
        print(f"{tag} {name:<12} n={len(qs)}: accuracy with CoT {m['accuracy']:.3f} ± {se['accuracy']:.3f}, without "
              f"{m['accuracy_no_cot']:.3f} ± {se['accuracy_no_cot']:.3f}, zero-shot cloze "
              f"{m['accuracy_no_cot_cloze']:.3f} "
              f"± {se['accuracy_no_cot_cloze']:.3f} (chance {m['chance']:.3f}); answers read "
              f"{m['extracted']:.0%} ({time.perf_counter() - t:.0f} s)", flush=True)
        record("reasoning", f"{tag}.{tag_name}.n", len(qs))
        record("reasoning", f"{tag}.{tag_name}.samples", samples)
        record("reasoning", f"{tag}.{tag_name}.shots", shots)
        record("reasoning", f"{tag}.{tag_name}.temperature", temperature)
        for k in ("accuracy", "accuracy_no_cot", "accuracy_no_cot_cloze", "accuracy_no_cot_listed",
                  "first_choice_no_cot_listed", "extracted",
                  "chance"):
            record("reasoning", f"{tag}.{tag_name}.{k}", m[k])
            record("reasoning", f"{tag}.{tag_name}.{k}_se", se[k])


def tests(lm, tag: str, n: int, samples: int, max_new_tokens: int, batch: int, shots: int, sets: list[str]) -> None:
    """Every test's metric over the first ``n`` questions of each of ``sets`` (pooled), ± s.e. over questions."""
    t = time.perf_counter()
    qs = [q for name in sets for q in il.reasoning.builtin(name, n=n)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = il.reasoning.evaluate(lm, qs, tests=list(il.reasoning.TESTS), samples=samples,
                                   max_new_tokens=max_new_tokens, generator="rule", batch=batch, shots=shots,
                                   progress=False)
    print(f"{tag} tests on {len(qs)} questions ({', '.join(sets)}) x {samples} samples "
          f"({time.perf_counter() - t:.0f} s):")
    record("reasoning", f"{tag}.tests.n", len(qs))
    record("reasoning", f"{tag}.tests.sets", ", ".join(sets))
    record("reasoning", f"{tag}.tests.shots", shots)
    record("reasoning", f"{tag}.tests.samples", samples)
    for k, v in ev.mean.items():
        print(f"  {k:<36} {v:+.3f} ± {ev.stderr[k]:.3f} (n={ev.n_per_metric[k]})", flush=True)
        record("reasoning", f"{tag}.tests.{k}", v)
        record("reasoning", f"{tag}.tests.{k}_se", ev.stderr[k])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=None, help="questions per built-in set for accuracy (default: all)")
    ap.add_argument("--n-tests", type=int, default=4, help="questions of each of --test-sets for the tests' metrics")
    ap.add_argument("--test-sets", nargs="+", choices=il.reasoning.SETS, default=list(il.reasoning.SETS),
                    help="the built-in sets whose first --n-tests questions the tests run on (pooled)")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="sampling temperature of the accuracy step (0: greedy, as Wei et al. 2022; the tests "
                         "sample at 0.7)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--sets", nargs="+", choices=il.reasoning.SETS, default=list(il.reasoning.SETS),
                    help="the built-in sets for accuracy, in this order (each recorded as it finishes)")
    ap.add_argument("--split", choices=["sets", "dev"], default="sets",
                    help="accuracy on the built-in sets, or on the development split (sets.development())")
    ap.add_argument("--batch", type=int, default=8, help="questions generated together")
    ap.add_argument("--shots", type=int, default=il.reasoning.SHOTS, help="worked examples before each question")
    ap.add_argument("--only", nargs="+", choices=["cost", "no_cot", "accuracy", "tests"],
                    default=["cost", "no_cot", "accuracy", "tests"])
    ap.add_argument("--texts", default=None, help="JSONL file to append every question's chains of thought to")
    args = ap.parse_args()
    keep_texts(args.texts)
    torch.set_num_threads(1)
    lm = il.load(args.model)
    tag = args.model.split("-")[0].split(".")[0]  # "smollm2", "qwen2"
    steps = {"cost": lambda: cost(lm, args.rounds), "no_cot": lambda: no_cot(lm, tag),
             "accuracy": lambda: accuracy(lm, tag, args.n, args.samples, args.max_new_tokens, args.batch, args.shots,
                                               args.sets, args.temperature, args.split),
             "tests": lambda: tests(lm, tag, args.n_tests, args.samples, args.max_new_tokens, args.batch, args.shots,
                                   args.test_sets)}
    for step in dict.fromkeys(args.only):  # in the order given
        steps[step]()


if __name__ == "__main__":
    main()
