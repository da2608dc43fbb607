"""Scores of a unit's explanation: detection, fuzzing, simulation and embedding similarity.

* **detection** (delphi): does the window contain what the explanation describes? **fuzzing**
  (delphi): are the window's tokens marked ``<<like this>>`` what the explanation describes
  (activating windows marked where the unit fires, against windows marked at random tokens)? Both
  are read from the scorer's log-odds of "yes" against "no" (log-sum-exp over the spellings of each
  word); nothing is sampled. Three forms:

  - ``question="words"`` (the default): each word alone, ``Description: ...`` / ``Word: "7"`` /
    ``Does the word fit the description?`` with ten balanced worked examples on other classes
    (:func:`word_scores`). A word's score is the explanation's log-odds, centred on their mean over fixed
    background words, minus the best of fixed reference descriptions' (centred the same way), so both the
    description's and the word's own yes-bias cancel; the threshold is 0 (the explanation fits better than
    every reference). Fuzzing scores a window by the mean over its marked words, detection by its
    best word. The references' and the explanation's answers are kept per word for an ``il.explain_unit`` call
    (shared by its units, and by detection and fuzzing).
  - ``question="window"`` with ``per_prompt=1`` (delphi offers it too): one window
    per question. Detection asks ``Description: ...`` / ``Text: "..."`` / ``Does the text contain
    <explanation>? Answer yes or no.``; fuzzing asks about the marked tokens together (``Word: "7"`` /
    ``Does the word fit the description?``). The instruction, the worked examples (other rules, answers
    balanced yes/no in seeded random order, never the unit's windows) and the description run once; the
    windows run on that key/value cache in batched passes, one answer position each.
  - ``per_prompt>1``: delphi's list form, ``per_prompt`` numbered shuffled windows per prompt, the
    answer a list of 1/0 read item by item after the scorer's own greedy answers to the items before
    it (:meth:`~.engine.PrefixScorer.read_lists`).

  Both report balanced accuracy of the decisions (positives and negatives weigh the same) and AUROC of
  the log-odds.
* **simulation** (Bills et al. 2023, "all at once"): the simulator reads Bills et al.'s prompt (their
  instruction in our words, ``Neuron N`` / ``Explanation of neuron N behavior: the main thing this neuron
  does is find ...`` turns, three worked neurons whose records list ``token<TAB>activation`` lines, ``unknown`` before
  a revealed index, between ``<start>`` and ``<end>``; our own example texts), the explanation, and the
  window one token a line followed by a tab and ``unknown``; at each tab its distribution over the
  number tokens 0-10 gives an expected activation, all positions of a window in one pass. The score is
  Pearson's r between expected and true activations over all tokens.
* **embedding**: cosine similarity of the explanation to each window under a sentence encoder
  (all-MiniLM-L6-v2, ``il.load("minilm-l6")``), scored as AUROC of activating against
  non-activating windows.

The decision rule of balanced accuracy (``calibration``):

* ``"reference"`` (the word questions' default): a word fits when the explanation fits it better than
  every reference description (its score above 0); a window is "yes" when its score (best word, or mean
  of the marked words) is above 0. No label and no base rate is used.
* ``"content_free"`` (the whole-window questions' default; contextual calibration, Zhao et al. 2021): the same question is
  asked about content-free inputs (``N/A``, an empty text, ``[MASK]``); a window is called "yes" exactly
  when its log-odds exceed the mean of theirs. No label and no base rate is used.
* ``"zero"``: the greedy answer (log-odds above 0), what delphi's written answer would be.
* ``"median"``: the threshold splits the log-odds in the positives' and negatives' proportions (the
  median on a balanced set), as a scorer told the classes' base rate would.

The greedy balanced accuracy is always reported too (``balanced_accuracy_raw``); AUROC needs no threshold.
"""

from __future__ import annotations

import math
import random
import re
import time
from typing import Any

import numpy as np
import torch

from .engine import HOLE, ExplanationError, PrefixScorer, chat_text, encode, split_prompt
from .questions import (  # the names of __all__ among these are re-exported
    BACKGROUND_WORDS, CONTENT_FREE, REFERENCE_DESCRIPTIONS, WORD_SHOTS, _flat, marked_words, references_for,
    single_prompt, single_question, single_scores, window_words, word_log_odds, word_scores)

DETECTION_SYSTEM = (
    "You are a careful linguist who checks descriptions of what a neuron of a language model responds to.\n\n"
    "You are given a description, such as \"male pronouns\" or \"text with negative sentiment\", and several "
    "numbered text examples. Decide for each example whether it contains what the description says. All "
    "examples may contain it, none may, or some.\n\n"
    "Answer with a Python list holding, for each example in turn, 1 if it contains what the description says "
    "and 0 if it does not. Write nothing but the list.")
FUZZING_SYSTEM = (
    "You are a careful linguist who checks descriptions of what a neuron of a language model responds to.\n\n"
    "You are given a description, such as \"male pronouns\" or \"text with negative sentiment\", and several "
    "numbered text examples in which some tokens are marked between << and >>. Decide for each example whether "
    "the marked tokens are what the description says. An example is correct only if every marked token fits the "
    "description; all examples may be correct, none may, or some.\n\n"
    "Answer with a Python list holding, for each example in turn, 1 if its marked tokens fit the description "
    "and 0 if they do not. Write nothing but the list.")
# worked examples (description, examples, answers): positives and negatives mixed in no fixed pattern
FUZZING_SHOTS = [
    ("names of colours", ["She painted the old door <<red>> and the fence green.",
                          "He <<walked>> slowly to the station in the morning.",
                          "The sky turned <<orange>> at sunset.", "We ate bread and <<cheese>> for lunch.",
                          "His <<blue>> car was parked outside."], [1, 0, 1, 0, 1]),
    ("words for animals", ["I <<think>> the answer is yes.", "The old <<dog>> chased a cat across the yard.",
                           "The <<train>> left at noon.", "A <<horse>> stood in the field.",
                           "She bought a <<new>> phone."], [0, 1, 0, 1, 0]),
    ("the word \"of\" before a capitalised name", ["The Bank <<of>> England raised its rate.",
                                                    "We met at the <<end>> of the road.",
                                                    "He is the mayor <<of>> Paris.", "She drank a cup of <<tea>>.",
                                                    "Most <<of>> them left early."], [1, 0, 1, 0, 0]),
]
# detection shows the same windows without the marks
DETECTION_SHOTS = [(d, [w.replace("<<", "").replace(">>", "") for w in ws], a) for d, ws, a in FUZZING_SHOTS]
# Bills et al.'s all-at-once simulation prompt: their instruction (in our words) and layout (a worked neuron per turn pair,
# its records as token<TAB>activation lines between <start> and <end>, "unknown" before each record's first
# revealed index, so that the simulator always expects a number may follow a tab); our own example texts.
SIMULATION_SYSTEM = (
    "We study neurons of a neural network.\nEach neuron looks for one particular thing in a short document.\n"
    "Read the summary of what a neuron does and predict how strongly it fires on each token.\n\n"
    "The format is token<tab>activation; activations go from 0 to 10, and \"unknown\" marks an activation "
    "not given. Most activations are 0.\n")
SIMULATION_PREFIX = "the main thing this neuron does is find"
SIMULATION_SHOTS = [   # (explanation, [(tokens, activations 0-10, first revealed index)])
    ("words for animals", [
        (["The", " old", " dog", " chased", " a", " cat", " across", " the", " yard", "."],
         [0, 0, 10, 0, 0, 9, 0, 0, 0, 0], 4),
        (["A", " horse", " and", " two", " sheep", " stood", " in", " the", " field", "."],
         [0, 10, 0, 0, 8, 0, 0, 0, 0, 0], 1)]),
    ("the word \"of\" after a noun", [
        (["The", " Bank", " of", " England", " raised", " its", " rate", "."], [0, 0, 10, 0, 0, 0, 0, 0], 3),
        (["Most", " of", " them", " left", " because", " of", " the", " rain", "."], [0, 6, 0, 0, 0, 9, 0, 0, 0], 5)]),
    ("words about the weather", [
        (["It", " rained", " all", " day", " and", " the", " wind", " was", " cold", "."],
         [0, 10, 0, 0, 0, 0, 7, 0, 4, 0], 2),
        (["We", " stayed", " inside", " while", " the", " storm", " passed", "."], [0, 0, 0, 0, 0, 10, 1, 0], 0)]),
]


def simulation_prompt(lm: Any, explanation: str, top: int = 10, shots: int = 3) -> str:
    """Bills et al.'s all-at-once prompt up to the first token line of the simulated record
    (``...Activations:\n<start>\n``); ``top``: the largest activation the simulator's tokens write;
    ``shots``: worked neurons shown (a small context takes fewer)."""
    def record(tokens: list[str], acts: list[int], reveal: int) -> str:
        return "\n".join(f"{_visible(t)}\t{'unknown' if i < reveal else min(a, top)}"
                         for i, (t, a) in enumerate(zip(tokens, acts)))

    turns: list[tuple[str, str]] = []
    for i, (expl, records) in enumerate(SIMULATION_SHOTS[:shots]):
        turns.append(("user", f"Neuron {i + 1}\nExplanation of neuron {i + 1} behavior: {SIMULATION_PREFIX} {expl}"))
        turns.append(("assistant", "Activations:\n<start>\n" + "\n<end>\n<start>\n".join(
            record(*r) for r in records) + "\n<end>"))
    n = len(SIMULATION_SHOTS[:shots]) + 1
    turns.append(("user", f"Neuron {n}\nExplanation of neuron {n} behavior: {SIMULATION_PREFIX} {explanation.strip()}"))
    system = SIMULATION_SYSTEM.replace("0 to 10", f"0 to {top}")
    return chat_text(lm, turns, system=system) + "Activations:\n<start>\n"


# one window per question: worked examples on other rules than any unit's, half "yes" and half "no"
# (shuffled with the seed, so that no answer pattern can be copied from the examples)


def _examples(texts: list[str]) -> str:
    return "\n".join(f"Example {i}: {_flat(t)}" for i, t in enumerate(texts))


def _message(explanation: str, examples: str) -> str:
    return f"Description: {explanation}\n\nText examples:\n\n{examples}"


BRIEF_SYSTEM = {"detection": "For each numbered example: 1 if it contains what the description says, else 0. "
                             "Answer with a list.",
                "fuzzing": "For each numbered example: 1 if its tokens marked << >> fit the description, else 0. "
                           "Answer with a list."}


def yes_no_prompt(lm: Any, explanation: str, kind: str, shots: int = 3, brief: bool = False) -> str:
    """The detection or fuzzing conversation (delphi's form: several numbered examples per prompt, the
    answer a list of 1/0) ending with the answer list's opening ``[``, with a :data:`~.engine.HOLE`
    where the numbered examples go. ``brief``: a one-sentence instruction, for small contexts."""
    system = BRIEF_SYSTEM[kind] if brief else DETECTION_SYSTEM if kind == "detection" else FUZZING_SYSTEM
    turns: list[tuple[str, str]] = []
    for expl, texts, answers in (DETECTION_SHOTS if kind == "detection" else FUZZING_SHOTS)[:shots]:
        turns += [("user", _message(expl, _examples(texts))), ("assistant", "[" + ", ".join(map(str, answers)) + "]")]
    turns.append(("user", _message(explanation, HOLE)))
    return chat_text(lm, turns, system=system) + "["


def _list_tokens(lm: Any) -> tuple[list[int], list[int], list[int]]:
    """The token ids of the answers 1 and 0 (after ``[`` and after the separator) and of the separator
    ``", "`` between items (``","`` where a tokenizer merges the space into the digit)."""
    def after(head: str, d: str) -> int | None:
        a, b = encode(lm, head), encode(lm, head + d)
        return b[-1] if len(b) == len(a) + 1 and b[:len(a)] == a else None

    for sep_text in (", ", ","):
        a, b = encode(lm, "[1"), encode(lm, "[1" + sep_text + "0")
        if b[:len(a)] != a:
            continue
        sep = b[len(a):-1]
        yes = [t for t in (after("[", "1"), after("[0" + sep_text, "1")) if t is not None]
        no = [t for t in (after("[", "0"), after("[1" + sep_text, "0")) if t is not None]
        if sep and yes and no and not set(yes) & set(no):
            return list(dict.fromkeys(yes)), list(dict.fromkeys(no)), sep
    raise ExplanationError(f"The scorer {lm.name}'s tokenizer does not write the answers 1 and 0 as tokens of their own.")


def yes_no_scores(scorer_lm: Any, explanation: str, kind: str, texts: list[str], *, batch_size: int = 16,
                  shots: int = 3, per_prompt: int = 5, seed: int = 0) -> tuple[np.ndarray, PrefixScorer, float]:
    """``[len(texts)]`` log-odds of 1 against 0 for each text, read from delphi-style list prompts.

    The texts are shuffled (``seed``) and shown ``per_prompt`` to a prompt as numbered examples; each
    prompt's answer list is read greedily item by item (:meth:`~.engine.PrefixScorer.read_lists`),
    so a text's log-odds are read after the scorer's own answers to the texts before it. Returns the
    log-odds in the order of ``texts``, the prefix scorer (its pass counts) and the check figure: the
    difference between the first prompt's first log-odds on the cache and in a plain pass.
    """
    yes, no, sep = _list_tokens(scorer_lm)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    # a small context drops worked examples first, then the long instruction, then shows fewer
    # examples per prompt (the longest prompt and its answer list must fit)
    tries = [(k, False, per_prompt) for k in range(shots, -1, -1)] + [(0, True, per_prompt)]
    n = per_prompt
    while n > 1:
        n = max(1, n // 2)
        tries.append((0, True, n))
    for shots, brief, per_prompt in tries:
        groups = [order[i:i + per_prompt] for i in range(0, len(order), per_prompt)]
        blocks = [_examples([texts[j] for j in g]) for g in groups]
        prefix, tail = split_prompt(scorer_lm, yes_no_prompt(scorer_lm, explanation, kind, shots, brief))
        longest = max((len(encode(scorer_lm, b + tail)) for b in blocks), default=0)
        if not scorer_lm.n_ctx or len(prefix) + longest + per_prompt * (1 + len(sep)) <= scorer_lm.n_ctx:
            break
    ps = PrefixScorer(scorer_lm, prefix, batch_size=batch_size)
    rows = [encode(scorer_lm, b + tail) for b in blocks]
    got = ps.read_lists(rows, [len(g) for g in groups], yes, no, sep)
    odds = np.zeros(len(texts), dtype=np.float64)
    for g, o in zip(groups, got):
        odds[g] = o
    err = 0.0
    if rows:
        ref = ps.full_pass(rows[0])
        err = abs(float(torch.logsumexp(ref[yes], -1) - torch.logsumexp(ref[no], -1)) - got[0][0])
    ps.shots, ps.brief, ps.per_prompt = shots, brief, per_prompt
    return odds, ps, err


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, calibration: str = "median",
                      content_free: np.ndarray | None = None) -> tuple[float, float]:
    """Balanced accuracy of the decisions ``scores > threshold`` against boolean ``labels``, and the threshold.

    ``calibration="content_free"``: the threshold is the mean of ``content_free`` (the log-odds of the
    same question on content-free inputs; Zhao et al. 2021); ``"median"``: the threshold splits the
    scores in the classes' proportions (the median of a balanced set); ``"zero"``: 0 (the raw yes/no
    decision).

    Example:
        >>> balanced_accuracy(np.array([3.0, 2.0, -1.0, 1.0]), np.array([1, 1, 0, 0], bool))
        (1.0, 1.5)
        >>> balanced_accuracy(np.array([3.0, 2.0, -1.0, 1.0]), np.array([1, 1, 0, 0], bool), "content_free",
        ...                   np.array([0.0, 1.0]))
        (0.75, 0.5)
    """
    pos, neg = labels.astype(bool), ~labels.astype(bool)
    if not pos.any() or not neg.any():
        return math.nan, math.nan
    if calibration == "median":
        s = np.sort(scores)
        k = int(neg.sum())     # the k lowest scores are called negative
        thr = float((s[k - 1] + s[k]) / 2) if 0 < k < len(s) else float(s[0])
    elif calibration == "content_free":
        if content_free is None or not len(content_free):
            raise ExplanationError("calibration='content_free' needs the log-odds of the content-free inputs.")
        thr = float(np.mean(content_free))
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


CALIBRATIONS = ("reference", "content_free", "median", "zero")
QUESTIONS = ("words", "window")


def _marks(text: str) -> list[str]:
    return [w.strip() for w in re.findall(r"<<(.*?)>>", text, flags=re.S) if w.strip()]


def _word_task(task: str, scorer_lm: Any, explanation: str, texts: list[str], *, batch_size: int,
               seed: int, cache: dict | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Per text, the word-level score: detection the best of the window's words (does it contain any?),
    fuzzing the mean over the marked words (do they fit, on the whole?)."""
    per = [window_words(_flat(t)) if task == "detection" else _marks(t) for t in texts]
    flat = [w for ws in per for w in ws]
    s, cost = word_scores(scorer_lm, explanation, flat, batch_size=batch_size, seed=seed, cache=cache)
    out, i = np.full(len(texts), -np.inf), 0
    for j, ws in enumerate(per):
        if ws:
            chunk = s[i:i + len(ws)]
            out[j] = chunk.max() if task == "detection" else chunk.mean()
        i += len(ws)
    return out, cost


def _yes_no_task(task: str, scorer_lm: Any, explanation: str, texts: list[str], labels: np.ndarray, *,
                 calibration: str | None, batch_size: int, shots: int, per_prompt: int = 1, seed: int = 0,
                 question: str = "words", cache: dict | None = None) -> dict[str, Any]:
    """Balanced accuracy (calibrated and raw), AUROC and cost of one yes/no ``task`` over ``texts``
    (``cache``: the word questions' answers kept between calls, :func:`word_log_odds`)."""
    t0 = time.perf_counter()
    if per_prompt > 1:
        question = "list"
    if calibration is None:
        calibration = "reference" if question == "words" else "content_free"
    if (calibration == "reference") != (question == "words") and calibration not in ("median", "zero"):
        raise ExplanationError(f"calibration={calibration!r} does not apply to question={question!r}: 'reference' "
                               "goes with the word-level questions, 'content_free' with whole windows or lists.")
    extra: dict[str, Any] = {}
    if question == "words":
        odds, cost = _word_task(task, scorer_lm, explanation, texts, batch_size=batch_size, seed=seed, cache=cache)
        cf, err = np.zeros(0), cost["cache_error"]
        passes, tokens = cost["passes"], cost["tokens"]
        extra = {"reference_passes": cost["reference_passes"], "reference_tokens": cost["reference_tokens"],
                 "words_asked": cost["words_asked"], "shots": cost["shots"], "brief_instruction": False,
                 "per_prompt": 1}
    elif question == "window":
        odds, cf, ps, err = single_scores(scorer_lm, explanation, task, texts, batch_size=batch_size, shots=shots,
                                          seed=seed)
        passes, tokens = ps.forward_calls, ps.tokens_run
    else:
        odds, ps, err = yes_no_scores(scorer_lm, explanation, task, texts, batch_size=batch_size, shots=min(shots, 3),
                                      per_prompt=per_prompt, seed=seed)
        passes, tokens, cf = ps.forward_calls, ps.tokens_run, np.zeros(0)
        if calibration == "content_free":   # the content-free inputs as one more list of their own
            cf, cps, _ = yes_no_scores(scorer_lm, explanation, task, list(CONTENT_FREE), batch_size=batch_size,
                                       shots=min(shots, 3), per_prompt=len(CONTENT_FREE), seed=seed)
            passes, tokens = passes + cps.forward_calls, tokens + cps.tokens_run
    if question != "words":
        extra = {"shots": ps.shots, "brief_instruction": ps.brief, "per_prompt": ps.per_prompt}
    # the reference rule: the scores already subtract the best reference description's, so the threshold is 0
    rule = "zero" if calibration == "reference" else calibration
    acc, thr = balanced_accuracy(odds, labels, rule, cf)
    raw, _ = balanced_accuracy(odds, labels, "zero")
    return {"balanced_accuracy": acc, "balanced_accuracy_raw": raw, "auroc": auroc(odds, labels), "threshold": thr,
            "calibration": calibration, "question": question, "log_odds": odds.tolist(),
            "content_free_log_odds": cf.tolist() if question != "words" else [], "forward_passes": passes, "tokens_run": tokens,
            "seconds": time.perf_counter() - t0, "cache_error": err, **extra}


def detection(scorer_lm: Any, explanation: str, texts: list[str], labels: np.ndarray, *, calibration: str | None = None,
              batch_size: int = 16, shots: int = 6, per_prompt: int = 1, seed: int = 0,
              question: str = "words", cache: dict | None = None) -> dict[str, Any]:
    """Detection scores of ``explanation`` over window texts with boolean ``labels`` (activating)."""
    return _yes_no_task("detection", scorer_lm, explanation, texts, labels, calibration=calibration,
                        batch_size=batch_size, shots=shots, per_prompt=per_prompt, seed=seed, question=question,
                        cache=cache)


def fuzzing(scorer_lm: Any, explanation: str, texts: list[str], labels: np.ndarray, *, calibration: str | None = None,
            batch_size: int = 16, shots: int = 6, per_prompt: int = 1, seed: int = 0,
            question: str = "words", cache: dict | None = None) -> dict[str, Any]:
    """Fuzzing scores: ``texts`` are marked windows; ``labels`` say which are marked where the unit fires."""
    return _yes_no_task("fuzzing", scorer_lm, explanation, texts, labels, calibration=calibration,
                        batch_size=batch_size, shots=shots, per_prompt=per_prompt, seed=seed, question=question,
                        cache=cache)


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
    longest = max((len(r) for r in rows), default=0)
    for shots in range(len(SIMULATION_SHOTS), -1, -1):   # a small context drops worked neurons first
        prefix = encode(sim_lm, simulation_prompt(sim_lm, explanation, top, shots))
        if not sim_lm.n_ctx or len(prefix) + longest <= sim_lm.n_ctx:
            break
    ps = PrefixScorer(sim_lm, prefix, batch_size=batch_size)
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
    return {"pearson": r_val, "scale": top, "shots": shots, "simulated": sims, "forward_passes": ps.forward_calls,
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


__all__ = ["BACKGROUND_WORDS", "CALIBRATIONS", "CONTENT_FREE", "QUESTIONS", "REFERENCE_DESCRIPTIONS", "WORD_SHOTS",
           "auroc", "balanced_accuracy", "detection", "embedding", "fuzzing", "references_for", "window_words",
           "word_log_odds", "word_scores",
           "marked_words", "number_ids", "simulation", "single_prompt", "single_question", "single_scores",
           "yes_no_prompt", "yes_no_scores"]

