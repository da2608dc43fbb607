"""Scores of a unit's explanation: detection, fuzzing, simulation and embedding similarity.

* **detection** (delphi): the scorer model reads the explanation and one window and says whether
  the window holds what the explanation describes; **fuzzing** (delphi): the window's tokens are
  marked and it says whether the marked tokens are what the explanation describes (activating
  windows marked where the unit fires against windows marked at random tokens). Both read the
  scorer's log-probabilities of *yes* against *no* after the question (no sampling), one row per
  window on the instruction's shared key/value cache, and report balanced accuracy (positives and
  negatives weigh the same) and AUROC.
* **simulation** (Bills et al. 2023, "all at once"): the simulator reads the explanation and the
  window listed one token a line, each followed by a tab and the word ``unknown``; at each tab its
  distribution over the number tokens 0-10 gives an expected activation, all positions of a window
  in one pass. The score is Pearson's r between expected and true activations over all tokens.
* **embedding**: cosine similarity of the explanation to each window under a sentence encoder
  (all-MiniLM-L6-v2, ``il.load("minilm-l6")``), scored as AUROC of activating against
  non-activating windows.

The threshold of balanced accuracy: a small model's yes/no log-odds are biased to one side, so the
default (``calibration="median"``) puts the threshold at the quantile of the scores that splits them
in the positives' and negatives' proportions (the median on a balanced set), as a scorer that is told
the classes' base rate does; ``calibration="zero"`` reads the raw answer (yes when it is likelier
than no). Both accuracies are reported.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from .engine import HOLE, PrefixScorer, answer_ids, chat_text, encode, split_prompt

DETECTION_SHOTS = [
    ("names of colours", "She painted the old door red and the fence green.", "yes"),
    ("names of colours", "He walked slowly to the station in the morning.", "no"),
    ("words for animals", "The old dog chased a cat across the yard.", "yes"),
]
FUZZING_SHOTS = [
    ("names of colours", "She painted the old door <<red>> and the fence <<green>>.", "yes"),
    ("names of colours", "She <<painted>> the old door red and the <<fence>> green.", "no"),
    ("words for animals", "The old <<dog>> chased a <<cat>> across the yard.", "yes"),
]
SIMULATION_SHOT = ("names of colours", ["The", " red", " car", " was", " green"], [0, 10, 0, 0, 9])


def _detection_message(explanation: str, text: str) -> str:
    return (f"A neuron of a language model fires on: {explanation}.\nText: \"{text}\"\n"
            "Does the text contain what the neuron fires on? Answer yes or no.")


def _fuzzing_message(explanation: str, text: str) -> str:
    return (f"A neuron of a language model fires on: {explanation}.\nSome tokens of the text are marked with << >>.\n"
            f"Text: \"{text}\"\nAre the marked tokens what the neuron fires on? Answer yes or no.")


def yes_no_prompt(lm: Any, explanation: str, kind: str, shots: int = 3) -> str:
    """The detection or fuzzing conversation with a :data:`~.engine.HOLE` where a window's text goes."""
    message = _detection_message if kind == "detection" else _fuzzing_message
    examples = (DETECTION_SHOTS if kind == "detection" else FUZZING_SHOTS)[:shots]
    turns: list[tuple[str, str]] = []
    for expl, text, ans in examples:
        turns += [("user", message(expl, text)), ("assistant", ans)]
    turns.append(("user", message(explanation, HOLE)))
    return chat_text(lm, turns, system="You check descriptions of neurons against texts. Answer yes or no.")


def yes_no_scores(scorer_lm: Any, explanation: str, kind: str, texts: list[str], *, batch_size: int = 16,
                  shots: int = 3) -> tuple[np.ndarray, PrefixScorer, float]:
    """``[len(texts)]`` log-odds of *yes* against *no* for each window text, the prefix scorer used
    (its pass counts) and the check figure: the largest difference between the first row's cached and
    plain-pass log-odds."""
    longest = max((len(encode(scorer_lm, t)) for t in texts), default=0)
    while True:
        prefix, tail = split_prompt(scorer_lm, yes_no_prompt(scorer_lm, explanation, kind, shots))
        # a small context drops worked examples first (the longest row must fit after the prompt)
        if shots == 0 or not scorer_lm.n_ctx or len(prefix) + len(encode(scorer_lm, tail)) + longest + 2 <= scorer_lm.n_ctx:
            break
        shots -= 1
    ps = PrefixScorer(scorer_lm, prefix, batch_size=batch_size)
    yes, no = answer_ids(scorer_lm, ["yes"]), answer_ids(scorer_lm, ["no"])
    rows = [encode(scorer_lm, t.replace('"', "'") + tail) for t in texts]
    logp = ps.next_logprobs(rows)                                                  # [n, vocab]
    odds = (torch.logsumexp(logp[:, yes], -1) - torch.logsumexp(logp[:, no], -1)).numpy().astype(np.float64)
    err = 0.0
    if rows:
        ref = ps.full_pass(rows[0])
        err = abs(float(torch.logsumexp(ref[yes], -1) - torch.logsumexp(ref[no], -1)) - float(odds[0]))
    ps.shots = shots
    return odds, ps, err


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, calibration: str = "median") -> tuple[float, float]:
    """Balanced accuracy of ``scores > threshold`` against boolean ``labels``, and the threshold.

    ``calibration="median"``: the threshold splits the scores in the classes' proportions (the
    median of a balanced set); ``"zero"``: 0 (the raw yes/no decision).

    Example:
        >>> balanced_accuracy(np.array([3.0, 2.0, -1.0, 1.0]), np.array([1, 1, 0, 0], bool))
        (1.0, 1.5)
    """
    pos, neg = labels.astype(bool), ~labels.astype(bool)
    if not pos.any() or not neg.any():
        return math.nan, math.nan
    if calibration == "median":
        s = np.sort(scores)
        k = int(neg.sum())     # the k lowest scores are called negative
        thr = float((s[k - 1] + s[k]) / 2) if 0 < k < len(s) else float(s[0])
    else:
        thr = 0.0
    pred = scores > thr
    return float(((pred & pos).sum() / pos.sum() + (~pred & neg).sum() / neg.sum()) / 2), thr


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN with one class only."""
    from sklearn.metrics import roc_auc_score

    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        return math.nan
    return float(roc_auc_score(labels, scores))


def _yes_no_task(task: str, scorer_lm: Any, explanation: str, texts: list[str], labels: np.ndarray, *,
                 calibration: str, batch_size: int, shots: int) -> dict[str, Any]:
    """Balanced accuracy (calibrated and raw), AUROC and cost of one yes/no ``task`` over ``texts``."""
    t0 = time.perf_counter()
    odds, ps, err = yes_no_scores(scorer_lm, explanation, task, texts, batch_size=batch_size, shots=shots)
    acc, thr = balanced_accuracy(odds, labels, calibration)
    raw, _ = balanced_accuracy(odds, labels, "zero")
    return {"balanced_accuracy": acc, "balanced_accuracy_raw": raw, "auroc": auroc(odds, labels), "threshold": thr,
            "log_odds": odds.tolist(), "forward_passes": ps.forward_calls, "tokens_run": ps.tokens_run,
            "seconds": time.perf_counter() - t0, "cache_error": err, "shots": ps.shots}


def detection(scorer_lm: Any, explanation: str, texts: list[str], labels: np.ndarray, *, calibration: str,
              batch_size: int, shots: int) -> dict[str, Any]:
    """Detection scores of ``explanation`` over window texts with boolean ``labels`` (activating)."""
    return _yes_no_task("detection", scorer_lm, explanation, texts, labels, calibration=calibration,
                        batch_size=batch_size, shots=shots)


def fuzzing(scorer_lm: Any, explanation: str, texts: list[str], labels: np.ndarray, *, calibration: str,
            batch_size: int, shots: int) -> dict[str, Any]:
    """Fuzzing scores: ``texts`` are marked windows; ``labels`` say which are marked where the unit fires."""
    return _yes_no_task("fuzzing", scorer_lm, explanation, texts, labels, calibration=calibration,
                        batch_size=batch_size, shots=shots)


def _visible(tok: str) -> str:
    return tok.replace("\n", "\\n").replace("\t", "\\t") or " "


def number_ids(lm: Any) -> tuple[list[int], list[int]]:
    """The values 0-10 whose text is one token of ``lm`` (a tokenizer that splits digits has no "10"),
    and those tokens."""
    vals, ids = [], []
    for v in range(11):
        got = encode(lm, str(v))
        if len(got) == 1:
            vals.append(v)
            ids.append(got[0])
    return vals, ids


def simulation(sim_lm: Any, explanation: str, windows: list[list[str]], values: list[list[float]], *,
               batch_size: int) -> dict[str, Any]:
    """Bills et al.'s all-at-once simulation of ``windows`` (token strings) against the true ``values``
    (per token), as Pearson's r over all tokens."""
    t0 = time.perf_counter()
    vals, ids = number_ids(sim_lm)
    top = max(vals) if vals else 10
    expl, toks, acts = SIMULATION_SHOT
    shot = "\n".join(f"{_visible(t)}\t{min(a, top)}" for t, a in zip(toks, acts))
    message = (f"We study a neuron of a language model. For each token of a text, predict the neuron's activation "
               f"from 0 (none) to {top} (strongest).\nExample: a neuron that fires on {expl}:\n{shot}\n\n"
               f"Now a neuron that fires on: {explanation}. Its activations:")
    prefix = encode(sim_lm, chat_text(sim_lm, [("user", message)]))
    ps = PrefixScorer(sim_lm, prefix, batch_size=batch_size)
    tab, unknown, newline = encode(sim_lm, "\t"), encode(sim_lm, "unknown"), encode(sim_lm, "\n")
    rows, at = [], []
    for w in windows:
        r: list[int] = []
        pos: list[int] = []
        for t in w:
            r += encode(sim_lm, _visible(t)) + tab
            pos.append(len(r) - 1)           # the tab: the next token is the activation
            r += unknown + newline
        rows.append(r)
        at.append(pos)
    got = ps.logprobs_at(rows, at) if rows and ids else []
    sims: list[list[float]] = []
    v = torch.tensor(vals, dtype=torch.float32)
    for g in got:
        p = torch.softmax(g[:, ids], -1)       # renormalised over the number tokens
        sims.append((p @ v).tolist())
    flat_sim = np.array([x for s in sims for x in s], dtype=np.float64)
    flat_true = np.array([x for w in values for x in w], dtype=np.float64)
    r_val = math.nan
    if len(flat_sim) > 1 and flat_sim.std() > 0 and flat_true.std() > 0:
        r_val = float(np.corrcoef(flat_sim, flat_true)[0, 1])
    return {"pearson": r_val, "scale": top, "simulated": sims, "forward_passes": ps.forward_calls,
            "tokens_run": ps.tokens_run, "seconds": time.perf_counter() - t0}


_ENCODERS: dict[str, Any] = {}


def embedding(embedder: Any, explanation: str, texts: list[str], labels: np.ndarray) -> dict[str, Any]:
    """Cosine similarity of the explanation to each window under a sentence encoder; AUROC of the classes."""
    from ..loading import load
    from ..targets import PooledEmbedding

    t0 = time.perf_counter()
    if isinstance(embedder, str):
        if embedder not in _ENCODERS:
            _ENCODERS[embedder] = load(embedder)
        enc = _ENCODERS[embedder]
    else:
        enc = embedder
    sims = enc.score(texts, PooledEmbedding(reference=explanation)).detach().double().numpy()
    return {"auroc": auroc(sims, labels), "similarity": sims.tolist(),
            "mean_gap": float(sims[labels].mean() - sims[~labels].mean()) if labels.any() and (~labels).any()
            else math.nan, "model": enc.name, "seconds": time.perf_counter() - t0}


__all__ = ["auroc", "balanced_accuracy", "detection", "embedding", "fuzzing", "number_ids", "simulation",
           "yes_no_prompt", "yes_no_scores"]

