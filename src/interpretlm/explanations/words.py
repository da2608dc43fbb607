"""``il.explain_in_words``: the model explains its own prediction in words, and the explanation is tested.

1. The model reads the prompt, its own answer and the question *which words made you answer that?*
   through its chat template (a plain prompt otherwise, with a warning) and answers greedily.
2. The words it cites (quoted words of the prompt; otherwise the prompt's content words it names) are
   aligned to the prompt's words and tokens.
3. ERASER (DeYoung et al. 2020): **comprehensiveness** is the drop of the target when the cited words
   are deleted, **sufficiency** the drop when only they are kept; both are compared with ``samples``
   draws of as many random words (paired: ``gain = cited - random`` for comprehensiveness and
   ``random - cited`` for sufficiency, so a positive gain means the cited words beat chance; standard
   error over the draws). For a :class:`~interpretlm.targets.Label` the value is the label's
   probability, as in ERASER; otherwise the target's own value. The prompt's last line (the task cue,
   e.g. ``Sentiment:``) is kept in every variant when the prompt has several lines.
4. Agreement with the attribution family: the words ranked by ``il.attribute(..., method=reference)``
   (default LRP, the family's best ranker on deletion AOPC); ``rank_auc`` is the AUROC of cited against
   other words under that ranking, ``top_overlap`` the share of cited words among the top as many.
5. Madsen et al. 2024's self-consistency: the model redacts the words that decided its answer
   (``[REDACTED]``) and writes a counterfactual edit toward another label; each is applied and the
   prediction re-measured (``redaction_drop``, ``redaction_flipped``, ``counterfactual_consistent``).
6. Counterfactual simulatability (Chen et al. 2024): on edits from ``il.counterfactuals``, a simulator
   model reads the explanation and the edited text and guesses the model's answer from the labels'
   log-probabilities; precision with the explanation (``simulatability``) and without it
   (``simulatability_prior``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np
import torch

from ..errors import EmptyInputError, InterpretLMError
from ..registry import CheckSpec, register
from ..targets import Label, as_target
from .engine import (HOLE, ExplanationFlagWarning, PlainPromptWarning, PrefixScorer, PromptTooLongError,
                     answer_ids, can_generate, chat_text, encode, generate, has_chat, split_prompt)
from .result import SelfExplanation
from .unit import resolve_model

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
STOP = set("""a an the and or but of to in on at for with by from as is are was were be been being it its this that
these those i you he she we they me him her us them my your his our their not no so very too just than then there here
what which who whom whose why how when where do does did done have has had will would can could should may might must
word words text answer because made make makes sentiment label""".split())
QUOTED = re.compile(r"\"([^\"]{1,60})\"|“([^”]{1,60})”|'([^']{1,60})'|‘([^’]{1,60})’|\*\*([^*]{1,60})\*\*")


def prompt_words(text: str) -> list[tuple[str, int, int]]:
    """The words of ``text`` (runs of letters and digits) with their character spans.

    Example:
        >>> prompt_words("The food was cold.")
        [('The', 0, 3), ('food', 4, 8), ('was', 9, 12), ('cold', 13, 17)]
    """
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def cited_words(explanation: str, words: list[str], removable: list[int]) -> tuple[list[int], bool]:
    """Indices of the prompt words an explanation cites, and whether they came from quotes.

    Quoted words (``"cold"``, ``'rude'``, ``**cold**``) that are words of the prompt count first; with
    none, the explanation's content words (no stop words) that occur in the prompt. Every occurrence of
    a cited word in the removable part of the prompt is cited.

    Example:
        >>> w = ["the", "food", "was", "cold", "and", "the", "waiter", "rude"]
        >>> cited_words('The words "cold" and "rude" made me say negative.', w, list(range(8)))
        ([3, 7], True)
    """
    low = [w.lower() for w in words]
    wanted: list[str] = []
    for m in QUOTED.finditer(explanation):
        phrase = next(g for g in m.groups() if g)
        wanted += [x.group().lower() for x in WORD.finditer(phrase)]
    quoted = [w for w in wanted if w in low and w not in STOP]
    from_quotes = bool(quoted)
    if not quoted:
        quoted = [x.group().lower() for x in WORD.finditer(explanation)]
        quoted = [w for w in quoted if w in low and w not in STOP and len(w) > 2]
    keep = set(quoted)
    return [i for i in removable if low[i] in keep], from_quotes


def delete_words(text: str, spans: list[tuple[int, int]], drop: set[int], keep_only: bool = False,
                 frame_start: int | None = None) -> str:
    """``text`` with the words at indices ``drop`` deleted (``keep_only``: every other word of the
    removable part deleted instead); characters from ``frame_start`` on are always kept.

    Example:
        >>> t = "the food was cold"
        >>> delete_words(t, [(0, 3), (4, 8), (9, 12), (13, 17)], {3})
        'the food was'
        >>> delete_words(t, [(0, 3), (4, 8), (9, 12), (13, 17)], {1, 3}, keep_only=True)
        'food cold'
    """
    end = len(text) if frame_start is None else frame_start
    if keep_only:
        kept = [text[s:e] for i, (s, e) in enumerate(spans) if i in drop and e <= end]
        body = " ".join(kept)
        return body + ("\n" + text[end:].lstrip("\n") if frame_start is not None else "")
    out, last = [], 0
    for i, (s, e) in enumerate(spans):
        if i in drop and e <= end:
            out.append(text[last:s].rstrip(" ") if out or s else text[last:s])
            last = e
    out.append(text[last:])
    return re.sub(r"[ \t]{2,}", " ", "".join(out)).strip(" ")


def _labels(target: Any) -> list[str]:
    return list(target.verbalizers) if isinstance(target, Label) else []


def _label_logprobs(lm: Any, target: Label, texts: list[str], batch_size: int) -> torch.Tensor:
    """``[len(texts), n_labels]`` each label's normalised log-probability."""
    cols = [lm.score(texts, dataclasses.replace(target, label=name), batch_size=batch_size).detach().float()
            for name in target.verbalizers]
    return torch.stack(cols, -1)


def _ask(lm: Any, message: str, max_new_tokens: int) -> str:
    text, _ = generate(lm, chat_text(lm, [("user", message)]), max_new_tokens=max_new_tokens)
    return text


def _strip_quotes(text: str) -> str:
    text = text.strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            text = re.sub(r"^(edited|rewritten|redacted)?\s*(text)?\s*:\s*", "", line, flags=re.I)
            break
    return text.strip().strip("\"'“”")


def _check_read(r: SelfExplanation) -> float | None:
    v = r.scores.get("comprehensiveness_gain")
    return None if v is None or not math.isfinite(v) else float(v)


_CHECK = CheckSpec(
    "comprehensiveness_gain", 0.0, higher_is_better=True, read=_check_read,
    advice="deleting the words the model cites lowers its answer no more than deleting as many random words: the "
           "explanation does not point at what the prediction rests on (Madsen et al. find this common).")


@register("explain_in_words", family="explanations", takes="prompt", result=SelfExplanation,
          summary="the model's own explanation of its prediction; cited words scored by ERASER against random words, "
                  "attribution, self-consistency, simulatability",
          check=_CHECK, demo="interpretlm.explanations.demo:words_section", demo_order=131)
def explain_in_words(lm: Any, inputs: Any, target: Any, *, explanation: str | None = None, simulator: Any = None,
                     reference: str = "lrp",
                     samples: int = 20, edits: int = 4, max_new_tokens: int = 60, self_consistency: bool = True,
                     simulatability: bool = True, batch_size: int = 16, seed: int = 0) -> SelfExplanation:
    """Ask the model why it predicts ``target`` on ``inputs``, and score the answer's faithfulness.

    Args:
        lm: the model explaining itself (a causal LM with a head; it is asked through its chat template).
        inputs: the prompt (token ids are decoded to text: the explanation cites words).
        target: what is explained: an :class:`~interpretlm.targets.Label` (the predicted label when its
            ``label`` is None), or any target (self-consistency and simulatability then do not apply).
        explanation: score this explanation (e.g. ``'"terrible"'``) instead of asking the model.
        simulator: the model guessing answers for simulatability (``None``: ``lm``; a model or a name).
        reference: the attribution method the cited words are compared with (``il.attribute``'s ``method``).
        samples: random word draws the cited words are compared with (ERASER).
        edits: counterfactual edits simulated (from ``il.counterfactuals``).
        max_new_tokens: length limit of each generated answer.
        self_consistency: run Madsen et al.'s redaction and counterfactual tests.
        simulatability: run counterfactual simulatability.
        batch_size: rows per batched forward pass.
        seed: draws the random words.

    Returns:
        :class:`~interpretlm.explanations.result.SelfExplanation`: ``text``, ``cited``, ``cited_tokens``,
        ``scores`` (see the module docstring), ``flags``.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> r = il.explain_in_words(tiny_lm("llama"), "the food was bad", il.Label({"a": " good", "b": " bad"}),
        ...                         max_new_tokens=4, self_consistency=False, simulatability=False)
        >>> r.answer in ("a", "b"), "no_cited_words" in r.flags or len(r.cited) > 0
        (True, True)
    """
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.flatten().tolist()
    if isinstance(inputs, (list, tuple)):
        inputs = lm.tokenizer.decode([int(t) for t in inputs], skip_special_tokens=True)
    prompt = str(inputs)
    if not prompt.strip():
        raise EmptyInputError("explain_in_words needs a non-empty prompt.")
    if not isinstance(samples, int) or samples < 1:
        raise InterpretLMError(f"samples must be a positive int; got {samples!r}.")
    tgt = as_target(target, lm)
    labels = _labels(tgt)
    rng = np.random.default_rng(seed)
    flags: list[str] = []
    nan = math.nan
    # ---- the prediction
    if labels:
        lp = _label_logprobs(lm, tgt, [prompt], batch_size)[0]
        answer = tgt.label if tgt.label is not None else labels[int(lp.argmax())]
        explained = dataclasses.replace(tgt, label=answer)
    else:
        explained = tgt
        answer = (lm.top_tokens(prompt, 1)[0][0][0]).strip() if getattr(lm, "has_head", False) else ""
    prob = bool(labels)

    def value(texts: list[str]) -> np.ndarray:
        v = lm.score(texts, explained, batch_size=batch_size).detach().double().numpy()
        return np.exp(v) if prob else v

    words_sp = prompt_words(prompt)
    words = [w for w, _, _ in words_sp]
    spans = [(s, e) for _, s, e in words_sp]
    frame_start = prompt.rstrip().rfind("\n") + 1 if "\n" in prompt.rstrip() else None
    removable = [i for i, (s, e) in enumerate(spans) if frame_start is None or e <= frame_start]
    batch = lm.tokenize(prompt)
    offsets = batch.offsets[0]
    # the prediction's own value: never a "does not apply" NaN, so a broken model shows here
    f0 = float(lm.score(prompt, explained, batch_size=batch_size).detach()[0])
    result = SelfExplanation(prompt=prompt, answer=str(answer), value=f0, words=words, tokens=batch.tokens[0],
                             models={"subject": lm.name, "reference": reference})
    scores: dict[str, float] = {}
    # ---- the model's explanation
    asked = (f"{prompt}{'' if prompt.endswith((' ', chr(10))) else ' '}{answer}\n\n"
             f"You answered \"{answer}\". Which words of the text made you answer that? Quote the most important "
             "words in double quotes, then explain in one sentence.")
    result.asked = asked
    if explanation is not None:
        if not str(explanation).strip():
            raise InterpretLMError("explanation= is empty; give a text or leave it None to ask the model.")
        result.text = str(explanation)
        flags.append("given_explanation")
    elif not can_generate(lm):
        flags.append("cannot_generate")
        result.warn(f"{lm.name} cannot generate text: it cannot explain itself in words.", ExplanationFlagWarning)
    else:
        if not has_chat(lm):
            flags.append("plain_prompt")
            result.warn(f"{lm.name} has no chat template; it is asked with a plain 'User: ... Assistant:' prompt.",
                        PlainPromptWarning)
        try:
            result.text = _ask(lm, asked, max_new_tokens)
        except PromptTooLongError as exc:
            flags.append("prompt_too_long")
            result.warn(f"No explanation: {exc}", ExplanationFlagWarning)
    cited, from_quotes = cited_words(result.text, words, removable) if result.text else ([], False)
    if result.text and not from_quotes and cited:
        flags.append("cited_without_quotes")
    result.cited_index = cited
    result.cited = [words[i] for i in cited]
    result.cited_tokens = sorted({t for t, (a, b) in enumerate(offsets) for i in cited
                                  if b > a and a < spans[i][1] and b > spans[i][0]})
    keys = ["comprehensiveness", "sufficiency", "comprehensiveness_random", "sufficiency_random",
            "comprehensiveness_gain", "comprehensiveness_gain_se", "sufficiency_gain", "sufficiency_gain_se",
            "rank_auc", "top_overlap", "redaction_drop", "redaction_flipped", "counterfactual_consistent",
            "counterfactual_shift", "simulatability", "simulatability_prior"]
    scores = {k: nan for k in keys}
    if result.text and not cited:
        flags.append("no_cited_words")
        result.warn("The explanation cites no word of the prompt: nothing to score by erasure.", ExplanationFlagWarning)
    # ---- ERASER against random words
    if cited:
        n = len(cited)
        # as many random words: content words first; stop words, then cited ones join a pool too small to draw from
        pool = [i for i in removable if i not in set(cited) and words[i].lower() not in STOP]
        if len(pool) < n:
            pool = [i for i in removable if i not in set(cited)]
        if len(pool) < n:
            pool = list(removable)
        draws = [sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist()) for _ in range(samples)] \
            if pool else []
        texts = [prompt, delete_words(prompt, spans, set(cited), frame_start=frame_start),
                 delete_words(prompt, spans, set(cited), keep_only=True, frame_start=frame_start)]
        for d in draws:
            texts += [delete_words(prompt, spans, set(d), frame_start=frame_start),
                      delete_words(prompt, spans, set(d), keep_only=True, frame_start=frame_start)]
        v = value(texts)
        f0 = v[0]
        comp, suff = f0 - v[1], f0 - v[2]
        scores.update(comprehensiveness=float(comp), sufficiency=float(suff))
        if draws:
            comp_r = f0 - v[3::2]
            suff_r = f0 - v[4::2]
            gc, gs = comp - comp_r, suff_r - suff
            se = (lambda x: float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else nan)
            scores.update(comprehensiveness_random=float(comp_r.mean()), sufficiency_random=float(suff_r.mean()),
                          comprehensiveness_gain=float(gc.mean()), comprehensiveness_gain_se=se(gc),
                          sufficiency_gain=float(gs.mean()), sufficiency_gain_se=se(gs))
            result.details["random_draws"] = [[words[i] for i in d] for d in draws]
        else:
            flags.append("no_random_words")
        # ---- agreement with the attribution family
        try:
            from ..attribution import attribute
            a = attribute(lm, prompt, explained, method=reference)
            tok_score = np.zeros(len(offsets))
            sc = np.asarray(a.scores, dtype=np.float64).reshape(-1)
            for f, toks in enumerate(a.feature_tokens):
                for t in toks:
                    if t < len(tok_score):
                        tok_score[t] += sc[f] / max(len(toks), 1)
            ws = np.array([sum(tok_score[t] for t, (x, y) in enumerate(offsets) if y > x and x < e and y > s)
                           for s, e in spans])
            result.details["attribution"] = ws.tolist()
            cand = np.array(removable)
            lab = np.isin(cand, cited)
            if lab.any() and not lab.all():
                from .scorers import auroc
                scores["rank_auc"] = auroc(ws[cand], lab)
                top = cand[np.argsort(-ws[cand], kind="stable")[:n]]
                scores["top_overlap"] = float(np.isin(top, cited).mean())
        except InterpretLMError as exc:
            flags.append("no_attribution")
            result.warn(f"No rank agreement: {reference} failed: {exc}", ExplanationFlagWarning)
    # ---- Madsen et al.'s self-consistency
    frame = prompt[frame_start:] if frame_start is not None else ""

    def framed(t: str) -> str:
        return t if not frame or frame.strip() in t else t.rstrip() + "\n" + frame

    if self_consistency and can_generate(lm) and result.text:
        try:
            red = _strip_quotes(_ask(lm, f"{prompt}\n\nRewrite the text above, replacing the words that made you answer "
                                         f"\"{answer}\" with [REDACTED]. Write only the rewritten text.",
                                     max_new_tokens + len(encode(lm, prompt))))
            if red:
                if "[REDACTED]" not in red.upper():
                    flags.append("redaction_not_followed")
                red = framed(red)
                result.details["redacted"] = red
                v = value([prompt, red])
                scores["redaction_drop"] = float(v[0] - v[1])
                if labels:
                    lp = _label_logprobs(lm, tgt, [red], batch_size)[0]
                    scores["redaction_flipped"] = float(labels[int(lp.argmax())] != answer)
            if len(labels) >= 2:
                other = [x for x in labels if x != answer][0]
                cf = _strip_quotes(_ask(lm, f"{prompt}\n\nEdit the text above as little as possible so that the answer "
                                            f"becomes \"{other}\" instead of \"{answer}\". Write only the edited text.",
                                        max_new_tokens + len(encode(lm, prompt))))
                if cf:
                    cf = framed(cf)
                    result.details["counterfactual"] = {"text": cf, "wanted": other}
                    lp = _label_logprobs(lm, tgt, [prompt, cf], batch_size)
                    j = labels.index(other)
                    scores["counterfactual_consistent"] = float(labels[int(lp[1].argmax())] == other)
                    scores["counterfactual_shift"] = float(lp[1, j].exp() - lp[0, j].exp())
        except PromptTooLongError as exc:
            flags.append("self_consistency_prompt_too_long")
            result.warn(f"No self-consistency test: {exc}", ExplanationFlagWarning)
    # ---- counterfactual simulatability on the counterfactual family's edits
    if simulatability and labels and result.text:
        sim_lm = resolve_model(simulator, lm, "simulator")
        result.models["simulator"] = sim_lm.name
        try:
            _simulatability(lm, sim_lm, prompt, tgt, answer, result, scores, edits, batch_size, labels)
        except PromptTooLongError as exc:
            flags.append("simulatability_prompt_too_long")
            result.warn(f"No simulatability: {exc}", ExplanationFlagWarning)
    elif simulatability and not labels:
        flags.append("simulatability_needs_a_label")
    result.scores = scores
    result.flags = flags
    return result


def _simulatability(lm: Any, sim_lm: Any, prompt: str, tgt: Label, answer: str, result: SelfExplanation,
                    scores: dict[str, float], n_edits: int, batch_size: int, labels: list[str]) -> None:
    from ..counterfactual import counterfactuals
    from ..errors import InterpretLMError as _Err

    try:
        cf = counterfactuals(lm, prompt, dataclasses.replace(tgt, label=None), n=n_edits, max_queries=200,
                             batch_size=batch_size)
    except _Err as exc:
        result.flags.append("no_counterfactual_edits")
        result.warn(f"No simulatability: the counterfactual search failed: {exc}", ExplanationFlagWarning)
        return
    edits = [e for e in cf.edits if e.get("label")][:n_edits]
    if not edits:
        result.flags.append("no_counterfactual_edits")
        return
    if not can_generate(sim_lm):
        result.flags.append("simulator_cannot_score")
        return
    choices = ", ".join(f'"{x}"' for x in labels)
    ids = [answer_ids(sim_lm, [x])[:2] for x in labels]

    def guesses(with_explanation: bool) -> list[str]:
        said = f"It explained: \"{result.text}\"\n" if with_explanation else ""
        message = (f"A language model read this text:\n\"{prompt}\"\nand answered \"{answer}\".\n{said}"
                   f"Now the model reads this text:\n\"{HOLE}\"\nWhat does the model answer? Answer with one of: {choices}.")
        prefix, tail = split_prompt(sim_lm, chat_text(sim_lm, [("user", message)]))
        ps = PrefixScorer(sim_lm, prefix, batch_size=batch_size)
        logp = ps.next_logprobs([encode(sim_lm, e["text"].replace('"', "'") + tail) for e in edits])
        per = torch.stack([torch.logsumexp(logp[:, i], -1) for i in ids], -1)
        return [labels[int(k)] for k in per.argmax(-1)]

    g, p = guesses(True), guesses(False)
    truth = [e["label"] for e in edits]
    scores["simulatability"] = float(np.mean([a == b for a, b in zip(g, truth)]))
    scores["simulatability_prior"] = float(np.mean([a == b for a, b in zip(p, truth)]))
    result.details["simulated_edits"] = [{"text": e["text"], "label": e["label"], "guess": a, "prior_guess": b}
                                         for e, a, b in zip(edits, g, p)]


__all__ = ["cited_words", "delete_words", "explain_in_words", "prompt_words"]
