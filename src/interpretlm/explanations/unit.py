"""``il.explain_unit``: explain units in words from their top and quantile windows (delphi's manner), then
score the explanation by detection, fuzzing, simulation and embedding similarity.

The windows come from the activation-maximization family (``il.maximize(..., method="mine")``): the
explainer reads the top windows and one window per quantile band with the tokens where the unit fires
marked ``<<like this>>``; the scorers read other windows: the remaining top and quantile windows
(activating) and as many windows where the unit stays below the firing threshold (non-activating),
half drawn at random from the corpus and half *hard* (the non-activating windows that hold the most
of the tokens the unit fires on).
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import numpy as np

from ..progress import track
from ..registry import CheckSpec, register
from ..units import bind_units
from . import scorers as S
from .engine import (ExplanationError, ExplanationFlagWarning, PlainPromptWarning, PromptTooLongError, can_generate, chat_text, encode,
                     generate, has_chat)
from .result import UnitExplanation

SCORERS = ("detection", "fuzzing", "simulation", "embedding")
_MODELS: dict[str, Any] = {}


def resolve_model(spec: Any, lm: Any, role: str) -> Any:
    """``None``: the subject model itself; a string: a model name (loaded once per process, ``il.load``);
    otherwise a loaded model handle."""
    if spec is None:
        return lm
    if isinstance(spec, str):
        if spec.startswith("LM("):
            raise ExplanationError(f"The {role} was recorded as {spec!r}, a model handle that cannot be reloaded; "
                                   f"pass {role}= again (il.rerun(result, lm, {role}=model)).")
        if spec not in _MODELS:
            from ..loading import load
            _MODELS[spec] = load(spec)
        return _MODELS[spec]
    if not hasattr(spec, "tokenizer"):
        raise ExplanationError(f"{role}= takes a model (il.load(...)), a model name or None; got {type(spec).__name__}.")
    return spec


def _text(tokens: list[str]) -> str:
    return "".join(tokens)


def marked(tokens: list[str], marks: set[int]) -> str:
    """The window's text with the tokens at ``marks`` wrapped in ``<<`` ``>>`` (leading spaces kept outside).

    Example:
        >>> marked(["The", " red", " car"], {1})
        'The <<red>> car'
    """
    out = []
    for i, t in enumerate(tokens):
        if i in marks and t.strip():
            lead = t[: len(t) - len(t.lstrip())]
            out.append(f"{lead}<<{t.strip()}>>")
        else:
            out.append(t)
    return "".join(out)


def explainer_message(evidence: list[dict[str, Any]], threshold: float, top_tokens: list[str]) -> str:
    """What the explainer reads: the windows with their firing tokens marked, and the commonest firing tokens."""
    lines = ["We study a neuron of a language model. Below are texts where it fires; the tokens where it fires "
             "are marked with << >>."]
    for i, w in enumerate(evidence):
        marks = {p for p, v in enumerate(w["values"]) if v > threshold}
        lines.append(f"Example {i + 1}: {marked(w['tokens'], marks).strip()}")
    if top_tokens:
        lines.append("Tokens where it fires most: " + ", ".join(repr(t) for t in top_tokens) + ".")
    lines.append("What do the marked tokens have in common? Answer with one short phrase that describes them "
                 "(for example: \"names of colours\").")
    return "\n".join(lines)


def clean_explanation(text: str) -> str:
    """The explanation phrase of a generated answer: its first non-empty line, without a leading label or
    surrounding quotes, at most 200 characters.

    Example:
        >>> clean_explanation('Explanation: "numbers written as digits".\\nMore text')
        'numbers written as digits'
    """
    for line in text.splitlines():
        line = line.strip()
        if line:
            line = re.sub(r"^(explanation|answer|description|phrase)\s*[:\-]\s*", "", line, flags=re.I)
            line = line.strip().strip("\"'“”`*").rstrip(".").strip().strip("\"'“”`*")
            return line[:200]
    return ""


def _window_record(lm: Any, ids: list[int], values: np.ndarray, kind: str, label: bool | None = None) -> dict[str, Any]:
    special = set(lm.tokenizer.all_special_ids or [])
    keep = [i for i, t in enumerate(ids) if t not in special]
    toks = lm.to_str_tokens([ids[i] for i in keep])
    rec = {"tokens": toks, "values": [float(values[i]) for i in keep], "kind": kind}
    if label is not None:
        rec["label"] = bool(label)
    return rec


def _score(result: UnitExplanation, rec: dict[str, Any], name: str, run: Any) -> None:
    """Run one scorer; a prompt too long for the scorer's context is a flag, not a crash."""
    try:
        rec["scores"][name] = run()
    except PromptTooLongError as exc:
        rec["flags"].append(f"{name}_prompt_too_long")
        result.warn(f"{rec['unit']}: no {name} score: {exc}", ExplanationFlagWarning)


_CHECK = CheckSpec(
    "cache_error", 1e-3,
    read=lambda r: max([e["scores"][s]["cache_error"] for e in r.explained for s in ("detection", "fuzzing")
                        if s in e["scores"]] or [None]) if r.explained and any(
        s in e["scores"] for e in r.explained for s in ("detection", "fuzzing")) else None,
    advice="the scorer's log-odds read on the shared key/value cache differ from a plain forward pass of the same "
           "row: the cache was not reused faithfully (a model whose attention the cache does not describe).")


@register("explain_unit", family="explanations", takes="unit", result=UnitExplanation, target="none",
          summary="explain units in words from top and quantile windows; score by detection, fuzzing, simulation, "
                  "embedding", check=_CHECK, demo="interpretlm.explanations.demo:section", demo_order=130)
def explain_unit(lm: Any, units: Any, *, corpus: Any = "builtin", explainer: Any = None, scorer: Any = None,
                 simulator: Any = None, embedder: Any = "minilm-l6", explanation: str | None = None,
                 scorers: tuple[str, ...] = SCORERS, window: int = 32, k: int = 20, n_explain: int = 10,
                 n_windows: int = 20, act_fraction: float = 0.3, max_windows: int | None = 4000,
                 question: str | None = None, calibration: str | None = None, shots: int = 6, per_prompt: int = 1,
                 max_new_tokens: int = 40, answers: dict | None = None,
                 batch_size: int = 16, seed: int = 0) -> UnitExplanation:
    """Explain what makes each unit fire, in words, and score the explanation.

    Args:
        lm: the model whose units are explained (the subject).
        units: ``il.Unit(...)`` or a list of them.
        corpus: where the windows come from (``"builtin"``: the KJV; a list of texts, a file, an ``il.corpus``).
        explainer: the model that writes the explanation (``None``: ``lm``; a loaded model or a model name).
            Any local instruct model: it is asked through its chat template (a plain prompt otherwise, with
            a warning).
        scorer: the model answering yes/no for detection and fuzzing (``None``: the explainer).
        simulator: the model predicting activations for simulation (``None``: the scorer).
        embedder: the sentence encoder of the embedding score (``"minilm-l6"``; ``None``: skip it).
        explanation: score this explanation instead of asking the explainer (a hypothesis to test).
        scorers: which of ``detection``, ``fuzzing``, ``simulation``, ``embedding`` run.
        window: tokens per window; k: top windows mined per unit (the first ``n_explain`` go to the
            explainer, the rest to the scorers with the quantile samples).
        n_windows: activating windows scored (at most), and as many non-activating ones.
        act_fraction: a token fires when its value exceeds this fraction of the unit's corpus maximum.
        max_windows: windows of the corpus read (``None``: all of it).
        question: what detection and fuzzing ask the scorer. ``"words"``: whether each word fits the
            explanation, in isolation (detection: every word of the window, the window scored by its best
            word; fuzzing: the marked words, scored by their mean), compared with fixed reference
            descriptions (:func:`~interpretlm.explanations.questions.word_scores`); ``"window"``: one question
            about the whole window (fuzzing: about its marked tokens together). ``None``: ``"words"``.
        calibration: the decision rule of detection's and fuzzing's balanced accuracy. ``None``: the
            question's own — ``"reference"`` for words (yes exactly when the explanation fits the word better
            than every reference description), ``"content_free"`` otherwise (yes exactly when a window's
            log-odds exceed the mean log-odds of content-free inputs; Zhao et al. 2021); ``"median"``
            (threshold at the scores' balanced median) or ``"zero"`` (the raw yes/no).
        shots: worked examples in the whole-window and list prompts (0-6 asking about one window; at most 3
            in the list form); the word-level questions always show their ten
            (:data:`~interpretlm.explanations.questions.WORD_SHOTS`).
        per_prompt: windows per detection or fuzzing prompt: 1 (the default) asks about each word or window alone
            (fuzzing about its marked tokens only); more shows delphi's numbered examples, answered as one list.
        max_new_tokens: length limit of the explainer's answer.
        answers: a dict that keeps the word questions' answers (per scorer, description and word) beyond
            this call: pass the same dict to later calls and the reference descriptions' answers about words
            already seen cost nothing (one call with several units shares them anyway). ``None``: kept for
            this call only.
        batch_size: rows per batched forward pass.
        seed: draws the random negatives and the fuzzing marks.

    Returns:
        :class:`~interpretlm.explanations.result.UnitExplanation`: ``text``, ``scores`` (the first unit),
        ``explained`` (every unit: explanation, evidence, scored windows, all scores, flags), ``models``.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm, CORPUS
        >>> lm = tiny_lm("llama")
        >>> r = il.explain_unit(lm, il.Unit("blocks.0.mlp.neurons", 3), corpus=CORPUS * 4, k=4, window=8,
        ...                     n_explain=2, n_windows=4, embedder=None, explanation="names of people")
        >>> r.text, 0.0 <= r.scores["detection"] <= 1.0
        ('names of people', True)
    """
    if calibration is not None and calibration not in S.CALIBRATIONS:
        raise ExplanationError(f"calibration must be one of {S.CALIBRATIONS}; got {calibration!r}.")
    if question is not None and question not in S.QUESTIONS:
        raise ExplanationError(f"question must be one of {S.QUESTIONS}; got {question!r}.")
    question = question or "words"
    cal_det = cal_fuzz = calibration
    if calibration == "reference" and (question == "window" or per_prompt > 1):
        raise ExplanationError("calibration='reference' goes with the word-level questions (question='words').")
    if calibration == "content_free" and question == "words" and per_prompt == 1:
        raise ExplanationError("calibration='content_free' goes with whole-window questions (question='window').")
    scorers = (scorers,) if isinstance(scorers, str) else tuple(scorers)
    bad = [s for s in scorers if s not in SCORERS]
    if bad:
        raise ExplanationError(f"Unknown scorer(s) {bad}; choose from {SCORERS}.")
    if not 0 < act_fraction < 1:
        raise ExplanationError(f"act_fraction must lie in (0, 1); got {act_fraction}.")
    if explanation is not None and not str(explanation).strip():
        raise ExplanationError("explanation= is empty; give a phrase or leave it None to ask the explainer.")
    for name, v in (("n_explain", n_explain), ("n_windows", n_windows), ("shots", shots + 1),
                    ("per_prompt", per_prompt)):
        if not isinstance(v, int) or v < 1:
            raise ExplanationError(f"{name} must be a positive int; got {v!r}.")
    from ..maximization import maximize
    from ..maximization.corpus import corpus as as_corpus
    from ..unit_reads import fetch_windows, window_values

    t_start = time.perf_counter()
    bound = bind_units(lm, units)
    expl_lm = resolve_model(explainer, lm, "explainer")
    score_lm = resolve_model(scorer, expl_lm, "scorer")
    sim_lm = resolve_model(simulator, score_lm, "simulator")
    c = as_corpus(corpus)
    mined = maximize(lm, bound.units, corpus=c, k=k, window=window, bands=5, samples=4, max_windows=max_windows,
                     detail=0, seed=seed)
    rng = random.Random(seed)
    models = {"subject": lm.name, "explainer": expl_lm.name if explanation is None else None,
              "scorer": score_lm.name, "simulator": sim_lm.name,
              "embedder": (embedder if isinstance(embedder, str) else getattr(embedder, "name", None))
              if "embedding" in scorers else None,
              "explainer_chat": has_chat(expl_lm), "scorer_chat": has_chat(score_lm),
              "simulator_chat": has_chat(sim_lm)}
    result = UnitExplanation(models=models)
    # the word questions' answers: references shared by the units, the explanation's by both scorers
    word_cache: dict = {} if answers is None else answers
    warned_plain = False
    for j in track(range(len(bound.units)), "explain_unit"):
        unit = bound.units[j]
        rec: dict[str, Any] = {"unit": unit.name, "text": "", "source": "given" if explanation else "explainer",
                               "flags": [], "prompt": "", "evidence": [], "windows": [], "scores": {}}
        result.explained.append(rec)
        top_max = float(mined.top_values[j, 0])
        if unit.name in mined.dead or not np.isfinite(top_max) or top_max <= 0:
            rec["flags"].append("never_fires")
            result.warn(f"{unit.name} never fires on the {mined.n_tokens:,} tokens read: there is nothing to explain.",
                        ExplanationFlagWarning)
            continue
        thr = act_fraction * top_max
        rec["threshold"] = thr
        top_w = [int(w) for w in mined.top_windows[j].tolist() if int(w) >= 0]
        q_w = [int(w) for w in mined.quantile_windows[j].flatten().tolist() if int(w) >= 0]
        q_w = [w for w in dict.fromkeys(q_w) if w not in top_w]
        per_band = [int(w) for w in mined.quantile_windows[j, :, 0].tolist() if int(w) >= 0 and int(w) not in top_w]
        ev_ids = top_w[:n_explain] + [w for w in per_band if w not in top_w[:n_explain]][::-1][:max(1, n_explain // 2)]
        held = [w for w in top_w[n_explain:] + q_w if w not in ev_ids]
        # negatives: random windows of the corpus read, those below the firing threshold
        taken = set(top_w) | set(q_w)
        pool = [w for w in range(mined.n_windows) if w not in taken]
        rng.shuffle(pool)
        cand = pool[:6 * n_windows]
        ids = fetch_windows(c, lm.tokenizer, window, set(ev_ids) | set(held) | set(cand))
        order = sorted(ids)
        vals = window_values(lm, bound.build(lm, [unit]), [ids[w] for w in order], batch_size)[:, :, 0].numpy()
        row = {w: i for i, w in enumerate(order)}
        rec["evidence"] = [_window_record(lm, ids[w], vals[row[w]], "top" if w in top_w else "quantile") for w in ev_ids]
        act = [w for w in held if vals[row[w]].max() > thr][:n_windows]
        if not act:
            rec["flags"].append("scored_on_evidence")   # too small a corpus to hold windows out
            act = [w for w in ev_ids if vals[row[w]].max() > thr][:n_windows]
        negs = [w for w in cand if vals[row[w]].max() <= thr]
        fire_ids = {ids[w][p] for w in ev_ids for p in np.nonzero(vals[row[w]] > thr)[0].tolist()}
        n_rand = min(len(negs), max(1, len(act) - len(act) // 2))
        rand = negs[:n_rand]
        rest = sorted(negs[n_rand:], key=lambda w: (-sum(t in fire_ids for t in ids[w]), -float(vals[row[w]].max())))
        hard = rest[:max(0, len(act) - n_rand)]
        if not negs:
            rec["flags"].append("no_negatives")
        windows = ([_window_record(lm, ids[w], vals[row[w]], "top" if w in top_w else "quantile", True) for w in act]
                   + [_window_record(lm, ids[w], vals[row[w]], "random", False) for w in rand]
                   + [_window_record(lm, ids[w], vals[row[w]], "hard", False) for w in hard])
        rec["windows"] = windows
        # ---- the explanation
        if explanation is not None:
            rec["text"] = str(explanation).strip()
        else:
            counts: dict[str, int] = {}
            for w in rec["evidence"]:
                for t, v in zip(w["tokens"], w["values"]):
                    if v > thr and t.strip():
                        counts[t.strip()] = counts.get(t.strip(), 0) + 1
            top_tokens = sorted(counts, key=lambda t: -counts[t])[:8]
            shown = len(rec["evidence"])
            message = explainer_message(rec["evidence"], thr, top_tokens)
            # a small context: show fewer windows (the best first) until the prompt leaves room to answer
            while shown > 1 and expl_lm.n_ctx and len(encode(expl_lm, chat_text(expl_lm, [("user", message)]))) \
                    + max_new_tokens > expl_lm.n_ctx:
                shown -= 1
                message = explainer_message(rec["evidence"][:shown], thr, top_tokens)
            if shown < len(rec["evidence"]):
                rec["flags"].append(f"evidence_cut_to_{shown}")
            rec["prompt"] = message
            if not can_generate(expl_lm):
                rec["flags"].append("cannot_generate")
                result.warn(f"The explainer {expl_lm.name} cannot generate text: no explanation of {unit.name}.",
                            ExplanationFlagWarning)
                continue
            if not has_chat(expl_lm):
                rec["flags"].append("plain_prompt")
                if not warned_plain:
                    result.warn(f"The explainer {expl_lm.name} has no chat template; it is asked with a plain "
                                "'User: ... Assistant:' prompt.", PlainPromptWarning)
                    warned_plain = True
            try:
                raw, _ = generate(expl_lm, chat_text(expl_lm, [("user", message)]), max_new_tokens=max_new_tokens)
            except PromptTooLongError as exc:
                rec["flags"].append("explainer_prompt_too_long")
                result.warn(f"No explanation of {unit.name}: {exc}", ExplanationFlagWarning)
                continue
            rec["raw"] = raw
            rec["text"] = clean_explanation(raw)
            if not rec["text"]:
                rec["flags"].append("empty_explanation")
                result.warn(f"The explainer wrote nothing usable for {unit.name} ({raw!r}).", ExplanationFlagWarning)
                continue
        # ---- the scores
        labels = np.array([w["label"] for w in windows], dtype=bool)
        texts = [_text(w["tokens"]) for w in windows]
        yes_no = [s for s in ("detection", "fuzzing") if s in scorers]
        if yes_no and not can_generate(score_lm):
            rec["flags"].append("scorer_cannot_score")
            result.warn(f"The scorer {score_lm.name} is not a causal LM with a head: no detection or fuzzing.",
                        ExplanationFlagWarning)
            yes_no = []
        if yes_no and not has_chat(score_lm) and "scorer_plain_prompt" not in rec["flags"]:
            rec["flags"].append("scorer_plain_prompt")
        if "detection" in yes_no and windows:
            _score(result, rec, "detection", lambda: S.detection(score_lm, rec["text"], texts, labels,
                                                                 calibration=cal_det, batch_size=batch_size,
                                                                 shots=shots, per_prompt=per_prompt, seed=seed,
                                                                 question=question, cache=word_cache))
        if "fuzzing" in yes_no and windows:
            fz_texts, fz_labels = [], []
            n_marks = max(1, int(np.median([sum(v > thr for v in w["values"]) for w in windows if w["label"]]
                                           or [1])))
            for w in windows:
                fire = {p for p, v in enumerate(w["values"]) if v > thr}
                quiet = [p for p, t in enumerate(w["tokens"]) if p not in fire and t.strip()]
                if w["label"]:
                    fz_texts.append(marked(w["tokens"], fire))
                    fz_labels.append(True)
                    # the same window marked at as many random tokens where the unit does not fire
                    wrong = set(rng.sample(quiet, min(len(fire), len(quiet))))
                    if wrong:
                        fz_texts.append(marked(w["tokens"], wrong))
                        fz_labels.append(False)
                else:
                    fz_texts.append(marked(w["tokens"], set(rng.sample(quiet, min(n_marks, len(quiet))))))
                    fz_labels.append(False)
            rec["fuzzing_texts"], rec["fuzzing_labels"] = fz_texts, fz_labels
            _score(result, rec, "fuzzing", lambda: S.fuzzing(score_lm, rec["text"], fz_texts, np.array(fz_labels, bool),
                                                             calibration=cal_fuzz, batch_size=batch_size,
                                                             shots=shots, per_prompt=per_prompt, seed=seed,
                                                             question=question, cache=word_cache))
        if "simulation" in scorers and windows:
            if can_generate(sim_lm):
                sim_windows = [w for w in windows if w["kind"] != "hard"]
                scale = max(top_max, 1e-12)
                _score(result, rec, "simulation", lambda: S.simulation(
                    sim_lm, rec["text"], [w["tokens"] for w in sim_windows],
                    [[max(0.0, v) / scale * 10 for v in w["values"]] for w in sim_windows], batch_size=batch_size))
            else:
                rec["flags"].append("simulator_cannot_score")
        if "embedding" in scorers and embedder is not None and windows and labels.any() and (~labels).any():
            try:
                rec["scores"]["embedding"] = S.embedding(embedder, rec["text"], texts, labels)
            except ImportError as exc:   # the encoder's package is missing: the other scores stand
                rec["flags"].append("no_embedder")
                result.warn(f"The embedding scorer needs {embedder!r}: {exc}", ExplanationFlagWarning)
    result.diagnostics = {"seconds": time.perf_counter() - t_start, "windows_read": mined.n_windows,
                          "units": len(result.explained)}
    return result


__all__ = ["SCORERS", "clean_explanation", "explain_unit", "explainer_message", "marked", "resolve_model"]
