"""Unit explanations side by side with Neuronpedia's ``automated-interpretability`` 0.0.24 (issue 14, point 4):
the maintained fork of OpenAI's explain → simulate → score pipeline (Bills et al. 2023), explaining and
scoring the same neurons from the same records with the same local model.

Their package calls OpenAI's API; here it calls ``_openai_shim.py``, an OpenAI-compatible server on
127.0.0.1 in this process that answers from the local explainer model (chat completions for their explainer;
legacy completions with ``echo=True, max_tokens=0, logprobs=15`` for their all-at-once simulator). Their
code runs unchanged in its own venv (``_npd_runner.py``; no torch there), pointed at the shim.

The units: the first ``--units`` neurons of ``benchmarks/explanations.py --units`` (layers 4, 14 and 24 of
SmolLM2-135M, indices drawn with seed 0, round-robin).

1. **ours**, as a user runs it: one ``il.explain_unit(lm, units, explainer=E, scorers=("simulation",))``
   call (one mining pass for all units): the explanation from the marked top and quantile windows, and our
   all-at-once simulation score (Pearson r) on the held-out activating windows and random non-activating
   ones.
2. **theirs**: their ``TokenActivationPairExplainer`` on the *same evidence records* (our top and quantile
   windows as ``ActivationRecord``\ s: token strings and raw activations), then their
   ``ExplanationNeuronSimulator`` + ``simulate_and_score`` on the *same scoring windows*
   (``ev_correlation_score``).
3. **cross**: our simulation of their explanation and their simulation of ours, so each scorer also scores
   both explanations (agreement of the two scorers on the same explanation).

Seconds per unit count the explanation and the simulation (not our mining, which their pipeline receives
done), measured per unit in one process with the two sides' order alternating from unit to unit: ours is
the explainer's generation timed again on the prompt ``explain_unit`` stored (it must give the same text)
plus our simulation scorer run again on the same windows (it must give the same r); theirs is the
client-side wall time of their explain and score calls (model time in the shim plus HTTP and parsing).
Token counts are load-independent: tokens each side's simulation runs through the model.

Run:  PYTHONPATH=src .venv/bin/python benchmarks/explanations_neuronpedia.py [--units 5] [--windows 6]
      [--explainer qwen2.5-coder-0.5b] [--venv /work/main/.bench-venvs/autointerp] [--log units.jsonl]
      [--summarize units.jsonl]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import interpretlm as il
from interpretlm.explanations.engine import chat_text, encode, generate

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _openai_shim import Shim  # noqa: E402
from _results import record  # noqa: E402

VENV = "/work/main/.bench-venvs/autointerp"
LAYERS = [4, 14, 24]


def units_of(lm, n: int) -> list[il.Unit]:
    """The neurons of ``benchmarks/explanations.py --units``: seed-0 draws per layer, round-robin."""
    g = torch.Generator().manual_seed(0)
    per = math.ceil(n / len(LAYERS))
    picks = [(layer, torch.randperm(lm.d_mlp, generator=g)[:per].tolist()) for layer in LAYERS]
    order = [(layer, idx[i]) for i in range(per) for layer, idx in picks]
    return [il.Unit(f"blocks.{layer}.mlp.neurons", i) for layer, i in order[:n]]


class Runner:
    """Their pipeline in its venv: one JSON job per line in, one answer per line out."""

    def __init__(self, venv: str, base_url: str, max_tokens: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OPENAI_API_KEY", "OPENAI_BASE_URL")}
        self.p = subprocess.Popen([f"{venv}/bin/python", str(HERE / "_npd_runner.py"), "--base-url", base_url,
                                   "--max-tokens", str(max_tokens)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=env)
        ready = self.p.stdout.readline()
        if not ready or not json.loads(ready).get("ready"):
            raise RuntimeError(f"the neuron_explainer runner did not start ({ready!r})")

    def __call__(self, job: dict) -> dict:
        self.p.stdin.write(json.dumps(job) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def close(self) -> None:
        self.p.stdin.close()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()


def _records(ws: list[dict]) -> list[dict]:
    return [{"tokens": w["tokens"], "activations": w["values"]} for w in ws]


def simulate_ours(expl, e: dict, text: str, act_fraction: float = 0.3) -> dict:
    """Our simulation scorer on unit record ``e``'s scoring windows, as ``explain_unit`` runs it (the windows
    that are not hard negatives; values ReLU'd and scaled so the unit's corpus maximum is 10)."""
    from interpretlm.explanations import scorers as S

    ws = [w for w in e["windows"] if w["kind"] != "hard"]
    scale = e["threshold"] / act_fraction
    return S.simulation(expl, text, [w["tokens"] for w in ws],
                        [[max(0.0, v) / scale * 10 for v in w["values"]] for w in ws], batch_size=16)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=5)
    ap.add_argument("--windows", type=int, default=6, help="activating windows scored (and half as many random)")
    ap.add_argument("--max-windows", type=int, default=400, help="corpus windows mined (one pass for all units)")
    ap.add_argument("--max-tokens", type=int, default=40, help="explanation length limit, both sides")
    ap.add_argument("--explainer", default=None, help="the explainer/simulator model (default: the default model)")
    ap.add_argument("--venv", default=VENV)
    ap.add_argument("--log", default=None, help="append each unit's figures to this JSON-lines file")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--summarize", default=None, help="summarise a --log file (a run cut short) instead of running")
    ap.add_argument("--tag", default="", help="--summarize: the key suffix of the explainer ('' for the default model)")
    a = ap.parse_args()
    if a.summarize:
        summarize([json.loads(line) for line in Path(a.summarize).read_text().splitlines() if line.strip()], a.tag)
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    lm = il.load()
    expl = il.load(a.explainer) if a.explainer else lm
    tag = "" if expl is lm else "_" + expl.name.split("-")[0].replace(".", "")
    units = units_of(lm, a.units)
    print(f"subject {lm.name}; explainer and simulator {expl.name}; {len(units)} units; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    # ours, as a user runs it: one call for all units (one mining pass), our explanations and simulation scores
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = il.explain_unit(lm, units, corpus=il.corpus("builtin"), explainer=expl, scorers=("simulation",),
                              embedder=None, k=a.windows + 10, n_explain=10, n_windows=a.windows,
                              max_windows=a.max_windows, max_new_tokens=a.max_tokens, progress=False)
    print(f"il.explain_unit on {len(units)} units (mining {a.max_windows} windows, explaining, simulating): "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    with Shim({"local": expl}, "local") as shim:
        runner = Runner(a.venv, shim.url, a.max_tokens)
        try:
            for n, e in enumerate(res.explained):
                row = {"unit": e["unit"], "load": os.getloadavg()[0], "ours_flags": e["flags"]}
                if not e["text"]:
                    rows.append(row)
                    continue
                row["ours_text"] = e["text"]
                row["ours_score"] = e["scores"].get("simulation", {}).get("pearson", math.nan)
                sim_ws = _records([w for w in e["windows"] if w["kind"] != "hard"])
                row["sim_windows"] = len(sim_ws)

                def run_ours():
                    prompt = chat_text(expl, [("user", e["prompt"])])
                    t = time.perf_counter()     # the explainer's generation again, on the prompt explain_unit stored
                    again, _ = generate(expl, prompt, max_new_tokens=a.max_tokens)
                    row["ours_explain_s"] = time.perf_counter() - t
                    assert again == e["raw"], (again, e["raw"])
                    sim = simulate_ours(expl, e, e["text"])
                    assert abs(sim["pearson"] - row["ours_score"]) < 1e-6 or (math.isnan(sim["pearson"]) and
                                                                              math.isnan(row["ours_score"]))
                    row.update(ours_sim_s=sim["seconds"], ours_sim_tokens=sim["tokens_run"],
                               ours_explain_tokens=len(encode(expl, prompt)))

                def run_theirs():
                    m0 = shim.meter.snapshot()
                    x = runner({"op": "explain", "records": _records(e["evidence"])})
                    m1 = shim.meter.snapshot()
                    row.update(theirs_text=x.get("explanation", ""), theirs_explain_s=x["seconds"],
                               theirs_explain_tokens=m1["tokens"] - m0["tokens"],
                               theirs_records_in_prompt=x.get("records_in_prompt"))
                    if not x["ok"]:
                        row["theirs_error"] = x["error"]
                        return
                    s = runner({"op": "score", "explanation": x["explanation"], "records": sim_ws})
                    m2 = shim.meter.snapshot()
                    row.update(theirs_sim_s=s["seconds"], theirs_sim_tokens=m2["tokens"] - m1["tokens"],
                               theirs_sim_model_s=m2["seconds"] - m1["seconds"],
                               theirs_score=s.get("pearson") if s["ok"] else None)
                    if s["ok"]:
                        row["theirs_parsed"] = f"{s['parsed_tokens']}/{s['tokens']}"
                    else:
                        row["theirs_error"] = s["error"]

                for step in ((run_ours, run_theirs) if n % 2 == 0 else (run_theirs, run_ours)):
                    step()
                # cross: each scorer on the other side's explanation, the same windows
                if row.get("theirs_text"):
                    row["ours_on_theirs"] = simulate_ours(expl, e, row["theirs_text"])["pearson"]
                    s = runner({"op": "score", "explanation": row["ours_text"], "records": sim_ws})
                    row["theirs_on_ours"] = s.get("pearson") if s["ok"] else None
                rows.append(row)
                print(f"{row['unit']:28s} ours {row['ours_text'][:40]!r:44s} r={row['ours_score']:+.2f} "
                      f"({row['ours_explain_s']:.1f}+{row['ours_sim_s']:.1f} s) | theirs "
                      f"{row.get('theirs_text', '')[:40]!r:44s} r={_num(row.get('theirs_score')):+.2f} "
                      f"({row.get('theirs_explain_s', math.nan):.1f}+{row.get('theirs_sim_s', math.nan):.1f} s, "
                      f"parsed {row.get('theirs_parsed')}) | ours-on-theirs {_num(row.get('ours_on_theirs')):+.2f} "
                      f"theirs-on-ours {_num(row.get('theirs_on_ours')):+.2f} {row.get('theirs_error', '')}",
                      flush=True)
                if a.log:
                    with open(a.log, "a") as f:
                        f.write(json.dumps(row, default=float) + "\n")
        finally:
            runner.close()
            meter = shim.meter.snapshot()
    print(f"shim: {meter['requests']} requests, {meter['tokens']:,} prompt tokens, {meter['seconds']:.0f} s in the model")
    summarize(rows, tag)


def _num(x) -> float:
    return math.nan if x is None else float(x)


def summarize(rows: list[dict], tag: str) -> None:
    from scipy.stats import pearsonr, spearmanr

    done = [r for r in rows if r.get("theirs_score") is not None and r.get("ours_text")]
    print(f"{len(done)} of {len(rows)} units scored by both sides")
    record("explanations_npd", f"units{tag}", len(rows))
    record("explanations_npd", f"units_both{tag}", len(done))
    if not done:
        return
    per_ours = [r["ours_explain_s"] + r["ours_sim_s"] for r in done]
    per_theirs = [r["theirs_explain_s"] + r["theirs_sim_s"] for r in done]
    ratio = [t / o for t, o in zip(per_theirs, per_ours)]
    sim_ratio = [r["theirs_sim_s"] / r["ours_sim_s"] for r in done]
    tok_ratio = [r["theirs_sim_tokens"] / r["ours_sim_tokens"] for r in done if r.get("ours_sim_tokens")]
    print(f"seconds per unit (explain + simulate), median: ours {np.median(per_ours):.1f}, theirs "
          f"{np.median(per_theirs):.1f}; theirs/ours per unit: median {np.median(ratio):.1f}x "
          f"(simulation alone {np.median(sim_ratio):.1f}x; simulation tokens run {np.median(tok_ratio):.1f}x)")
    print(f"  explain alone: ours {np.median([r['ours_explain_s'] for r in done]):.1f} s, theirs "
          f"{np.median([r['theirs_explain_s'] for r in done]):.1f} s (prompt tokens: ours "
          f"{np.median([r['ours_explain_tokens'] for r in done]):.0f}, theirs "
          f"{np.median([r['theirs_explain_tokens'] for r in done]):.0f})")
    for k, v in (("ours_seconds_per_unit", np.median(per_ours)), ("theirs_seconds_per_unit", np.median(per_theirs)),
                 ("theirs_over_ours_time", np.median(ratio)), ("theirs_over_ours_sim_time", np.median(sim_ratio)),
                 ("theirs_over_ours_sim_tokens", np.median(tok_ratio)),
                 ("load_average", float(np.mean([r["load"] for r in rows])))):
        record("explanations_npd", f"{k}{tag}", float(v))
    o = np.array([_num(r["ours_score"]) for r in done])
    t = np.array([_num(r["theirs_score"]) for r in done])
    print(f"simulation score, each side on its own explanation: ours mean {np.nanmean(o):+.3f}, theirs mean "
          f"{np.nanmean(t):+.3f}")
    record("explanations_npd", f"ours_mean_score{tag}", float(np.nanmean(o)))
    record("explanations_npd", f"theirs_mean_score{tag}", float(np.nanmean(t)))
    pairs = {"own_explanations": (o, t)}
    cross = [r for r in done if r.get("theirs_on_ours") is not None and "ours_on_theirs" in r]
    if cross:
        # the same explanation scored by both scorers: ours vs theirs on our explanation and on theirs
        a_ = np.array([_num(r["ours_score"]) for r in cross] + [_num(r["ours_on_theirs"]) for r in cross])
        b_ = np.array([_num(r["theirs_on_ours"]) for r in cross] + [_num(r["theirs_score"]) for r in cross])
        pairs["same_explanation"] = (a_, b_)
        # which explanation each scorer prefers, unit by unit
        ours_pref = np.array([_num(r["ours_score"]) - _num(r["ours_on_theirs"]) for r in cross])
        their_pref = np.array([_num(r["theirs_on_ours"]) - _num(r["theirs_score"]) for r in cross])
        agree = float(np.mean(np.sign(ours_pref) == np.sign(their_pref)))
        print(f"  ours scores our explanation higher on {np.mean(ours_pref > 0):.0%} of units, theirs on "
              f"{np.mean(their_pref > 0):.0%}; the two scorers prefer the same explanation on {agree:.0%}")
        record("explanations_npd", f"same_preference{tag}", agree)
        record("explanations_npd", f"ours_prefers_ours{tag}", float(np.mean(ours_pref > 0)))
        record("explanations_npd", f"theirs_prefers_ours{tag}", float(np.mean(their_pref > 0)))
    for name, (x, y) in pairs.items():
        ok = ~(np.isnan(x) | np.isnan(y))
        if ok.sum() > 2:
            pr, sr = pearsonr(x[ok], y[ok]).statistic, spearmanr(x[ok], y[ok]).statistic
            print(f"agreement ours ~ theirs ({name}, n={ok.sum()}): Pearson {pr:+.2f}, Spearman {sr:+.2f}; "
                  f"mean |difference| {np.mean(np.abs(x[ok] - y[ok])):.3f}")
            record("explanations_npd", f"{name}_pearson{tag}", float(pr))
            record("explanations_npd", f"{name}_spearman{tag}", float(sr))
            record("explanations_npd", f"{name}_n{tag}", int(ok.sum()))


if __name__ == "__main__":
    main()
