"""Unit explanations on the default model: the cost of each scorer, the scores' distribution, and the
planted ground truth.

1. **Cost** (``--cost``): one neuron of SmolLM2-135M (``blocks.12.mlp.neurons[417]``) explained from the
   built-in corpus, every scorer run on the same windows (``--windows`` activating + as many
   non-activating); prints seconds, batched forward passes and tokens run per scorer, and the ratio of
   simulation's time to detection's and fuzzing's, measured in this process (absolute times are noisy on
   a shared machine; the ratio is the figure to quote).
2. **Distribution** (``--units N``): N neurons from each of three layers (4, 14, 24; indices drawn with
   seed 0), each explained by the default model and scored; prints mean and median of every score per
   layer and the Spearman correlation between scorers over the units.
3. **Ground truth** (``--ground-truth``): the planted neurons of ``tests/test_explanations.py`` (one
   firing on digits, one on names of people); the true rule and four wrong ones scored by the default
   model (``--scorer qwen2.5-coder-0.5b``: by the optional built-in Qwen2.5-Coder-0.5B-Instruct), on the
   tiny corpus with digits or (``--gt-corpus balanced``) on one where the wrong rules' words come on
   their own coins.

4. **Self-explanations** (``--in-words MODEL``): ``il.explain_in_words`` on MODEL (``default`` or a name):
   ERASER scores of citing the word that decides a review against citing another word, and the model's own
   explanation of a review with its self-consistency and simulatability.

With ``--planted`` the cost is measured on the planted digit neuron as the subject (mining is instant),
the default model scoring (``--scorer``: another model scoring and simulating).

Run:  PYTHONPATH=src python benchmarks/explanations.py [--cost [--planted] [--scorer qwen2.5-coder-0.5b]]
      [--units 2 [--log units.jsonl]] [--in-words default|qwen2.5-coder-0.5b]
      [--ground-truth [--scorer qwen2.5-coder-0.5b] [--gt-classes digits,names] [--gt-corpus balanced]] [--windows 20]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import interpretlm as il
from interpretlm.explanations.scorers import balanced_accuracy

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _results import record  # noqa: E402


def _quiet(verb, *args, **kw):
    """``verb(*args, progress=False, **kw)`` with its warnings silenced (the figures are printed instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return verb(*args, progress=False, **kw)


def _run(lm, unit, **kw):
    return _quiet(il.explain_unit, lm, unit, **kw)


def _scorer_tag(scorer) -> str:
    """The suffix of a scorer's figures: none for the default model, ``_qwen25`` for qwen2.5-coder-0.5b."""
    return "" if scorer.name.startswith("smollm2") else "_" + scorer.name.split("-")[0].replace(".", "")


def cost(lm, windows: int, max_windows: int, planted: bool = False, rounds: int = 1,
         thread_compare: bool = False, scorer=None) -> None:
    """Detection, fuzzing and simulation of one unit's windows, timed in ``rounds`` interleaved rounds
    (det, fuzz, sim, det, ...) in this process: their ratio is the figure to quote on a shared machine.
    ``scorer``: the model that scores and simulates (default ``lm``; figures then keyed ``..._{tag}``)."""
    from interpretlm.explanations import scorers as S

    scorer = lm if scorer is None else scorer
    tag = _scorer_tag(scorer)

    t0 = time.perf_counter()
    if planted:   # the planted digit neuron as the subject (mining is instant)
        import test_explanations as T

        unit = il.Unit("blocks.0.mlp.neurons", T.NEURON)
        r = _run(T.build_planted(), unit, corpus=T.digit_corpus(), k=windows + 5, window=16, n_explain=5,
                 n_windows=windows, scorer=scorer, explanation="digits (numbers such as 3 or 7)",
                 scorers=("fuzzing", "embedding"))
    else:
        unit = il.Unit("blocks.12.mlp.neurons", 417)
        r = _run(lm, unit, corpus=il.corpus("builtin"), k=windows + 10, n_explain=10, n_windows=windows,
                 max_windows=max_windows, scorer=scorer, scorers=("fuzzing", "embedding"))
    e = r.explained[0]
    n_act = sum(w["label"] for w in e["windows"])
    print(f"{unit.name}: {r.text!r}; {len(e['windows'])} windows scored ({n_act} activating); "
          f"{time.perf_counter() - t0:.0f} s to mine, explain and fuzz once")
    labels = np.array([w["label"] for w in e["windows"]])
    texts = ["".join(w["tokens"]) for w in e["windows"]]
    sim_w = [w for w in e["windows"] if w["kind"] != "hard"]
    scale = max(max(w["values"]) for w in e["windows"])
    fz, fzl = e["fuzzing_texts"], np.array(e["fuzzing_labels"])

    kept: dict = {}    # the word questions' answers, as il.explain_unit keeps them over its units

    def fresh(task, **kw):   # the word form with its reference descriptions computed anew (a call's first unit)
        kept.clear()
        return task(**kw, cache=kept)

    def shared(task, **kw):  # the references already answered (an earlier unit of the call), the explanation not
        for key in [k for k in kept if k[4] == r.text]:
            del kept[key]
        return task(**kw, cache=kept)

    # the defaults (word questions) with everything computed anew, then with the reference descriptions'
    # answers shared, then the whole-window questions
    det = dict(scorer_lm=scorer, explanation=r.text, texts=texts, labels=labels)
    fuz = dict(scorer_lm=scorer, explanation=r.text, texts=fz, labels=fzl)
    runs = {"detection": lambda: fresh(S.detection, **det),
            "detection_shared": lambda: shared(S.detection, **det),
            "detection_window": lambda: S.detection(**det, question="window"),
            "fuzzing": lambda: fresh(S.fuzzing, **fuz),
            "fuzzing_shared": lambda: shared(S.fuzzing, **fuz),
            "fuzzing_window": lambda: S.fuzzing(**fuz, question="window"),
            "simulation": lambda: S.simulation(scorer, r.text, [w["tokens"] for w in sim_w],
                                               [[max(0.0, v) / scale * 10 for v in w["values"]] for w in sim_w],
                                               batch_size=16)}
    secs: dict[str, list[float]] = {k: [] for k in runs}
    last: dict[str, dict] = {}
    load = os.getloadavg()[0]
    for _ in range(rounds):
        for k, f in runs.items():
            last[k] = f()
            secs[k].append(last[k]["seconds"])
    med = {k: float(np.median(v)) for k, v in secs.items()}
    print(f"  scorer and simulator {scorer.name}; {rounds} interleaved round(s), torch threads "
          f"{torch.get_num_threads()}, load {load:.0f}-{os.getloadavg()[0]:.0f} on {os.cpu_count()} cores")
    for name, d in last.items():
        score = d.get("balanced_accuracy", d.get("pearson"))
        ref = (f"  + references {d['reference_passes']} passes {d['reference_tokens']} tokens"
               if "reference_passes" in d else "")
        print(f"  {name:22s} {med[name]:7.1f} s  {d['forward_passes']:>4} batched passes  {d['tokens_run']:>7} tokens"
              f"{ref}  score {score:.3f}")
        record("explanations", f"cost_{name}_seconds{tag}", med[name])
        record("explanations", f"cost_{name}_passes{tag}", d["forward_passes"] + d.get("reference_passes", 0))
        record("explanations", f"cost_{name}_tokens{tag}", d["tokens_run"] + d.get("reference_tokens", 0))
    for name in [k for k in runs if k != "simulation"]:
        ratio = med["simulation"] / med[name]
        tok = last["simulation"]["tokens_run"] / max(1, last[name]["tokens_run"] + last[name].get("reference_tokens", 0))
        print(f"  simulation / {name}: {ratio:.2f}x the time, {tok:.2f}x the tokens")
        record("explanations", f"simulation_over_{name}_time{tag}", ratio)
        record("explanations", f"simulation_over_{name}_tokens{tag}", tok)
    if thread_compare:   # what OpenMP's second thread costs on a shared machine: detection at 2 threads and at 1
        t: dict[int, list[float]] = {1: [], 2: []}
        before = torch.get_num_threads()
        for _ in range(rounds):
            for n in (2, 1):
                torch.set_num_threads(n)
                t[n].append(runs["detection"]()["seconds"])
        torch.set_num_threads(before)
        ratio = float(np.median(t[2]) / np.median(t[1]))
        print(f"  detection at 2 torch threads / at 1: {ratio:.2f}x the time (load {os.getloadavg()[0]:.0f})")
        record("explanations", "two_threads_over_one_time", ratio)


def distribution(lm, per_layer: int, windows: int, max_windows: int, log: str | None = None,
                 summarize: str | None = None, part: str | None = None, tag: str = "", explainer=None) -> None:
    """Explain and score ``per_layer`` neurons of each of layers 4, 14, 24; each unit's scores are
    appended to ``log`` (JSON lines) as it finishes, so a run cut short still summarises
    (``--summarize LOG[,LOG…]`` reads such files instead of running). ``part="i/n"`` runs every n-th
    unit from the i-th, so n processes share the units (each with its own log). ``tag`` prefixes the
    keys recorded (``"words_"``: the word questions' run, beside the whole-window questions' figures).
    The word questions' answers are kept across the units of a process (``answers=``), so the reference
    descriptions are asked about a word once per process, as in one ``il.explain_unit`` call.
    ``explainer``: a model that explains, scores and simulates (default: ``lm``, the subject)."""
    import json

    keys = ["detection", "fuzzing", "simulation", "embedding"]
    layers = [4, 14, 24]
    rows = []
    if summarize:
        for line in [x for f in summarize.split(",") for x in Path(f).read_text().splitlines()]:
            d = json.loads(line)
            rows.append((d["layer"], d["scores"], d["seconds"]))
    else:
        g = torch.Generator().manual_seed(0)
        picks = [(layer, torch.randperm(lm.d_mlp, generator=g)[:per_layer].tolist()) for layer in layers]
        # round-robin over the layers, so that a run cut short still covers all three
        order = [(layer, idx[i]) for i in range(per_layer) for layer, idx in picks]
        if part:
            i, n = (int(x) for x in part.split("/"))
            order = order[i - 1::n]
        answers: dict = {}   # the reference descriptions' answers, asked once for all the units, as one call would
        roles = {} if explainer is None else {"explainer": explainer, "scorer": explainer, "simulator": explainer}
        for layer, i in order:
            unit = il.Unit(f"blocks.{layer}.mlp.neurons", i)
            t0 = time.perf_counter()
            r = _run(lm, unit, corpus=il.corpus("builtin"), k=windows + 10, n_explain=10, n_windows=windows,
                     max_windows=max_windows, answers=answers, **roles)
            s = {k: float(v) for k, v in r.scores.items() if k in keys}
            e = r.explained[0]
            secs = {k: e["scores"][k]["seconds"] for k in keys if k in e["scores"]}
            secs["all"] = time.perf_counter() - t0
            rows.append((layer, s, secs))
            print(f"  {unit.name:28s} {r.text[:50]!r:54s} det {s.get('detection', math.nan):.2f} "
                  f"fuzz {s.get('fuzzing', math.nan):.2f} sim {s.get('simulation', math.nan):+.2f} "
                  f"emb {s.get('embedding', math.nan):.2f}  ({secs['all']:.0f} s)", flush=True)
            if log:
                with open(log, "a") as f:
                    f.write(json.dumps({"unit": unit.name, "layer": layer, "text": r.text, "scores": s,
                                        "seconds": secs, "flags": e["flags"]}) + "\n")
    for layer in layers:
        vals = {k: [s[k] for lay, s, _ in rows if lay == layer and k in s and not math.isnan(s[k])] for k in keys}
        print(f"layer {layer} ({sum(lay == layer for lay, _, _ in rows)} units): " + ", ".join(
            f"{k} mean {np.mean(v):.2f} median {np.median(v):.2f}" for k, v in vals.items() if v))
    from scipy.stats import spearmanr

    print("Spearman between scorers over the units:")
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            x = np.array([[s.get(keys[a], math.nan), s.get(keys[b], math.nan)] for _, s, _ in rows])
            x = x[~np.isnan(x).any(1)] if len(x) else x
            if len(x) > 2:
                rho = spearmanr(x[:, 0], x[:, 1]).statistic
                print(f"  {keys[a]} ~ {keys[b]}: {rho:+.2f} (n={len(x)})")
                record("explanations", f"{tag}spearman_{keys[a]}_{keys[b]}", float(rho))
    for k in keys:
        v = [s[k] for _, s, _ in rows if k in s and not math.isnan(s[k])]
        if v:
            q = np.percentile(v, [10, 50, 90])
            print(f"  {k}: mean {np.mean(v):.3f}, 10/50/90th percentiles {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}")
            record("explanations", f"{tag}mean_{k}", float(np.mean(v)))
            record("explanations", f"{tag}median_{k}", float(q[1]))
        t = [sec[k] for _, _, sec in rows if k in sec]
        if t:
            print(f"  {k}: {np.median(t):.1f} s per unit (median)")
            record("explanations", f"{tag}dist_{k}_seconds_per_unit", float(np.median(t)))
    t = [sec["all"] for _, _, sec in rows]
    if t:
        print(f"  whole unit (mining, explaining, scoring): {np.median(t):.0f} s (median)")
        record("explanations", f"{tag}dist_unit_seconds", float(np.median(t)))
    record("explanations", f"{tag}units", len(rows))


PLANTED = {   # token class: (tokens the neuron fires on, the true rule, plausible wrong rules of the same kind)
    "digits": (None, "digits (numbers such as 3 or 7)", ["names of people", "words about food", "colours", "verbs"]),
    "names": ("NAMES", "names of people", ["digits (numbers such as 3 or 7)", "words about food", "colours", "verbs"]),
}
SLUG = {"names of people": "people", "words about food": "food", "colours": "colours", "verbs": "verbs",
        "digits (numbers such as 3 or 7)": "digits"}


def ground_truth(scorer, windows: int, scorers: tuple[str, ...], classes: list[str], question: str | None = None,
                 corpus: str = "digits", rules: set[str] | None = None) -> None:
    """The planted neuron of ``tests/test_explanations.py`` firing on one token class; its true rule and
    four wrong ones scored by ``scorer``. ``corpus="digits"``: the tiny corpus with a digit in every other
    text, so the wrong rule "digits" has digits in some non-activating windows (its nine sentences
    repeat, and the names come with ``went`` and ``gave a drink``); ``"balanced"``:
    ``T.balanced_corpus()``, where names, food, adjectives and digits each come on their own coin, in
    words of the tiny tokenizer's own corpus (120 texts, or 6 per window asked for above 20). Windows of
    16 tokens in both. ``rules``: only these (``"true"`` or a wrong rule's slug, e.g. ``{"colours",
    "verbs"}``), to complete a run stopped part way."""
    import test_explanations as T

    texts = T.balanced_corpus(max(120, 6 * windows)) if corpus == "balanced" else T.digit_corpus()
    ctag = ("_balanced" if corpus == "balanced" else "") + ("" if windows == 20 else f"_w{windows}")

    unit = il.Unit("blocks.0.mlp.neurons", T.NEURON)
    tag = _scorer_tag(scorer)
    answers: dict = {}   # the reference descriptions' answers about each word, asked once for all rules and classes
    for cls in classes:
        toks, true_rule, wrong = PLANTED[cls]
        planted = T.build_planted(getattr(T, toks)) if toks else T.build_planted()
        print(f"planted neuron on {cls}, scored by {scorer.name}:")
        for rule in [true_rule] + wrong:
            if rules and ("true" if rule == true_rule else SLUG[rule]) not in rules:
                continue
            r = _run(planted, unit, corpus=texts, k=windows + 5, window=16, n_explain=5,
                     n_windows=windows, scorer=scorer, explanation=rule, scorers=scorers, question=question,
                     answers=answers)
            e = r.explained[0]
            s = r.scores
            extra = {}
            for k in ("detection", "fuzzing"):
                d = e["scores"].get(k)
                if d:
                    labels = np.array([w["label"] for w in e["windows"]] if k == "detection" else e["fuzzing_labels"])
                    med = balanced_accuracy(np.array(d["log_odds"]), labels, "median")[0]
                    extra[k] = (d["balanced_accuracy_raw"], d["auroc"], med)
                else:
                    extra[k] = (math.nan, math.nan, math.nan)
            print(f"  {rule!r:36s} detection {s.get('detection', math.nan):.3f} (greedy {extra['detection'][0]:.3f}, "
                  f"median {extra['detection'][2]:.3f}, AUROC {extra['detection'][1]:.3f}), fuzzing "
                  f"{s.get('fuzzing', math.nan):.3f} (greedy {extra['fuzzing'][0]:.3f}, median {extra['fuzzing'][2]:.3f}, "
                  f"AUROC {extra['fuzzing'][1]:.3f}), simulation "
                  f"{s.get('simulation', math.nan):+.3f}, embedding AUROC {s.get('embedding', math.nan):.3f}",
                  flush=True)
            key = "true" if rule == true_rule else "wrong_" + SLUG[rule]
            qtag = {k: "_" + e["scores"][k]["question"] if k in e["scores"] and e["scores"][k].get("question", "words")
                    != "words" else "" for k in ("detection", "fuzzing", "embedding")}
            pre = ("planted" if cls == "digits" else f"planted_{cls}") + ctag
            for k in ("detection", "fuzzing", "embedding"):
                if k in s and not math.isnan(s[k]):   # a scorer not run reads NaN: keep the figure measured before
                    record("explanations", f"{pre}_{key}_{k}{qtag[k]}{tag}", s[k])
            for k in ("detection", "fuzzing"):
                if k in e["scores"]:
                    record("explanations", f"{pre}_{key}_{k}{qtag[k]}_greedy{tag}", extra[k][0])
                    record("explanations", f"{pre}_{key}_{k}{qtag[k]}_auroc{tag}", extra[k][1])
                    record("explanations", f"{pre}_{key}_{k}{qtag[k]}_median{tag}", extra[k][2])


def in_words(lm, samples: int = 20) -> None:
    """``il.explain_in_words`` on ``lm``: ERASER ground truth (a review one word decides, citing that word
    against citing another) and the model's own explanation of a review, with self-consistency and
    simulatability on counterfactual edits (the model simulating itself)."""
    tag = _scorer_tag(lm)
    label = il.Label({"positive": [" positive"], "negative": [" negative"]})
    t0 = time.perf_counter()
    for name, cite in (("right", '"terrible"'), ("wrong", '"soup"')):
        r = _quiet(il.explain_in_words, lm, "Review: the soup was terrible.\nSentiment:", label, explanation=cite,
                   samples=samples, self_consistency=False, simulatability=False)
        s = r.scores
        print(f"{lm.name}: cite {cite:11s} answer {r.answer}: comprehensiveness {s['comprehensiveness']:.3f} "
              f"(gain {s['comprehensiveness_gain']:+.3f} ± {s['comprehensiveness_gain_se']:.3f}), sufficiency "
              f"{s['sufficiency']:.3f} (gain {s['sufficiency_gain']:+.3f} ± {s['sufficiency_gain_se']:.3f}), "
              f"rank AUROC {s.get('rank_auc', math.nan):.2f}", flush=True)
        for k in ("comprehensiveness", "comprehensiveness_gain", "sufficiency", "sufficiency_gain", "rank_auc"):
            record("explanations", f"words_{name}_{k}{tag}", s.get(k, math.nan))
    r = _quiet(il.explain_in_words, lm, "Review: the food was cold and the waiter rude.\nSentiment:",
               il.Label({"positive": [" good"], "negative": [" bad"]}), samples=10, edits=2)
    s = r.scores
    print(f"{lm.name}: own explanation {r.text!r}; answer {r.answer}; cited {r.cited}; flags {r.flags}")
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in s.items() if isinstance(v, float)))
    for k in ("comprehensiveness", "comprehensiveness_gain", "sufficiency", "sufficiency_gain", "rank_auc",
              "redaction_drop", "redaction_flipped", "counterfactual_consistent", "simulatability",
              "simulatability_prior"):
        record("explanations", f"words_own_{k}{tag}", s.get(k, math.nan))
    record("explanations", f"words_seconds{tag}", time.perf_counter() - t0)
    print(f"  {time.perf_counter() - t0:.0f} s in all")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cost", action="store_true")
    ap.add_argument("--planted", action="store_true", help="cost on the planted digit neuron (default model scoring)")
    ap.add_argument("--rounds", type=int, default=1, help="cost: interleaved timing rounds")
    ap.add_argument("--thread-compare", action="store_true", help="cost: detection at 2 torch threads against 1")
    ap.add_argument("--units", type=int, default=0, help="neurons per layer for the distribution (0: skip)")
    ap.add_argument("--ground-truth", action="store_true")
    ap.add_argument("--in-words", default=None, metavar="MODEL",
                    help="self-explanations (il.explain_in_words) of MODEL (a name; 'default': the default model)")
    ap.add_argument("--windows", type=int, default=20, help="activating windows scored (and as many others)")
    ap.add_argument("--max-windows", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared machine OpenMP's second thread waits on a busy core and "
                         "makes small passes many times slower; 0: torch's default)")
    ap.add_argument("--log", default=None, help="distribution: append each unit's scores to this JSON-lines file")
    ap.add_argument("--summarize", default=None,
                    help="distribution: summarise --log files (comma list) instead of running")
    ap.add_argument("--part", default=None, help="distribution: i/n, every n-th unit from the i-th (n processes)")
    ap.add_argument("--explainer", default=None,
                    help="distribution: the explainer, scorer and simulator model (default: the default model)")
    ap.add_argument("--dist-tag", default="", help="distribution: prefix of the keys recorded (e.g. words_)")
    ap.add_argument("--gt-scorers", default="detection,fuzzing,simulation,embedding",
                    help="scorers of the ground-truth part (comma list)")
    ap.add_argument("--gt-classes", default="digits,names", help="planted token classes (comma list)")
    ap.add_argument("--question", default=None, choices=["words", "window"],
                    help="ground truth: what detection and fuzzing ask (default: each scorer's own)")
    ap.add_argument("--scorer", default=None,
                    help="ground truth and cost: the scorer (and simulator) model (default: the default model)")
    ap.add_argument("--gt-corpus", default="digits", choices=["digits", "balanced"],
                    help="ground truth: the tiny corpus with digits, or the balanced corpus (wrong rules' words "
                         "as common in activating windows as elsewhere)")
    ap.add_argument("--gt-rules", default=None,
                    help="ground truth: only these rules (comma list of true, digits, people, food, colours, verbs)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    lm = il.load()
    if a.cost:
        cost(lm, a.windows, a.max_windows, a.planted, a.rounds, a.thread_compare,
             il.load(a.scorer) if a.scorer else None)
    if a.units or a.summarize:
        distribution(lm, a.units, a.windows, a.max_windows, a.log, a.summarize, a.part, a.dist_tag,
                     il.load(a.explainer) if a.explainer else None)
    if a.in_words:
        in_words(lm if a.in_words == "default" else il.load(a.in_words))
    if a.ground_truth:
        ground_truth(il.load(a.scorer) if a.scorer else lm, a.windows, tuple(a.gt_scorers.split(",")),
                     a.gt_classes.split(","), a.question, a.gt_corpus,
                     set(a.gt_rules.split(",")) if a.gt_rules else None)


if __name__ == "__main__":
    main()
