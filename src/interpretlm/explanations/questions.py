"""The questions a small scorer is asked one item at a time: one window a question
(:func:`single_scores`), or one word a question compared with reference descriptions
(:func:`word_scores`, the default of detection and fuzzing). :mod:`.scorers` turns their log-odds
into balanced accuracy; the scores' forms and decision rules are described there.
"""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import torch

from .engine import HOLE, ExplanationError, PrefixScorer, chat_text, encode, split_prompt


def _flat(text: str) -> str:
    """One line per example: runs of whitespace holding a line break become one space."""
    return re.sub(r"\s*\n\s*", " ", text).strip()


SINGLE_SYSTEM = {"detection": "You check whether texts contain what descriptions say.",
                 "fuzzing": "You check whether words fit descriptions."}
SINGLE_SHOTS = {
    "detection": [("words for animals", "The old dog chased a cat across the yard.", True),
                  ("words for clothing", "The train left the station at noon.", False),
                  ("names of cities", "We flew from Berlin to Madrid last spring.", True),
                  ("words about weather", "She bought a new phone and a charger.", False),
                  ("words for body parts", "He hurt his knee and his elbow.", True),
                  ("words for animals", "I think the answer is yes.", False)],
    "fuzzing": [("words for animals", "dog", True), ("words for clothing", "station", False),
                ("names of cities", "Berlin", True), ("words about weather", "phone", False),
                ("words for body parts", "knee", True), ("words for animals", "answer", False)],
}
CONTENT_FREE = ("N/A", "", "[MASK]")


def single_question(kind: str, explanation: str, item: str) -> str:
    """The user turn asking about one window (detection) or one window's marked tokens (fuzzing).

    Example:
        >>> print(single_question("fuzzing", "digits", "7"))
        Description: digits
        Word: "7"
        Does the word fit the description? Answer yes or no.
    """
    if kind == "detection":
        return f'Description: {explanation}\nText: "{item}"\nDoes the text contain {explanation}? Answer yes or no.'
    return f'Description: {explanation}\nWord: "{item}"\nDoes the word fit the description? Answer yes or no.'


def single_prompt(lm: Any, explanation: str, kind: str, shots: int = 6, seed: int = 0) -> str:
    """The one-window-per-question conversation with a :data:`~.engine.HOLE` where the window goes,
    ending where the assistant's answer starts."""
    examples = list(SINGLE_SHOTS[kind])
    random.Random(seed).shuffle(examples)
    turns: list[tuple[str, str]] = []
    for expl, item, yes in examples[:shots]:
        turns += [("user", single_question(kind, expl, item)), ("assistant", "Yes" if yes else "No")]
    turns.append(("user", single_question(kind, explanation, HOLE)))
    return chat_text(lm, turns, system=SINGLE_SYSTEM[kind])


def marked_words(text: str) -> str:
    """The tokens a fuzzing window marks ``<<like this>>``, joined by ", " (what fuzzing's question shows).

    Example:
        >>> marked_words("When <<Tom>> and <<Anna>> went")
        'Tom, Anna'
    """
    return ", ".join(w.strip() for w in re.findall(r"<<(.*?)>>", text, flags=re.S))


def yes_no_ids(lm: Any) -> tuple[list[int], list[int]]:
    """The first tokens of the spellings of "yes" and of "no" (``answer_ids``), without the tokens both
    share (a tokenizer that splits " Yes" into " " and "Yes" would otherwise count the space as both)."""
    from .engine import answer_ids

    yes, no = answer_ids(lm, ["yes"]), answer_ids(lm, ["no"])
    both = set(yes) & set(no)
    yes, no = [t for t in yes if t not in both], [t for t in no if t not in both]
    if not yes or not no:
        raise ExplanationError(f"The scorer {lm.name}'s tokenizer has no first token that tells yes from no.")
    return yes, no


def single_scores(scorer_lm: Any, explanation: str, kind: str, texts: list[str], *, batch_size: int = 16,
                  shots: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, PrefixScorer, float]:
    """``[len(texts)]`` log-odds of yes against no, one question per text, and ``[3]`` the log-odds of
    the content-free inputs (:data:`CONTENT_FREE`), all in batched passes on the shared prompt's cache.

    Detection asks about the whole window, fuzzing about its marked tokens only. Returns the log-odds,
    the content-free log-odds, the prefix scorer (its pass counts) and the check figure: the difference
    between the first text's log-odds on the cache and in a plain pass.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama", max_position_embeddings=1024)
        >>> odds, cf, ps, err = single_scores(lm, "digits", "detection", ["a 7 b", "c d"], shots=2)
        >>> odds.shape, cf.shape, ps.forward_calls, err < 1e-3
        ((2,), (3,), 2, True)
    """
    yes, no = yes_no_ids(scorer_lm)
    items = [_flat(t) if kind == "detection" else marked_words(t) for t in texts]
    # a small context drops worked examples until the longest question fits
    for k in range(shots, -1, -1):
        prefix, tail = split_prompt(scorer_lm, single_prompt(scorer_lm, explanation, kind, k, seed))
        rows = [encode(scorer_lm, it + tail) for it in list(items) + list(CONTENT_FREE)]
        if not scorer_lm.n_ctx or len(prefix) + max(len(r) for r in rows) <= scorer_lm.n_ctx:
            break
    ps = PrefixScorer(scorer_lm, prefix, batch_size=batch_size)
    lp = ps.next_logprobs(rows)
    odds = (torch.logsumexp(lp[:, yes], -1) - torch.logsumexp(lp[:, no], -1)).double().numpy()
    err = 0.0
    if items:
        ref = ps.full_pass(rows[0])
        err = abs(float(torch.logsumexp(ref[yes], -1) - torch.logsumexp(ref[no], -1)) - float(odds[0]))
    ps.shots, ps.brief, ps.per_prompt = k, False, 1
    return odds[:len(items)], odds[len(items):], ps, err



# ---- word-level questions: the window decomposed into the words the small scorer can judge
# (balanced worked examples on other classes; the "no" examples are common words, as the windows' are)
WORD_SHOTS = [("words for animals", "dog", True), ("words for clothing", "was", False),
              ("names of cities", "Berlin", True), ("words about weather", "the", False),
              ("words for body parts", "knee", True), ("words for animals", "think", False),
              ("words about weather", "rain", True), ("names of cities", "table", False),
              ("words for clothing", "shirt", True), ("words for body parts", "of", False)]
# descriptions every word is also asked about: a word's own yes-bias (some words draw "yes" whatever the
# description) cancels in the explanation's log-odds minus the best of these; fixed, never the unit's
REFERENCE_DESCRIPTIONS = ("function words such as the, of or and", "verbs", "nouns for everyday objects", "adjectives",
                          "punctuation marks", "words for animals", "names of places", "words about time", "pronouns",
                          "words for body parts", "words about weather", "words for tools")
# common words of many kinds: each description's own yes-bias is its mean log-odds over these
BACKGROUND_WORDS = ("dog", "horse", "Berlin", "London", "rain", "snow", "knee", "hand", "shirt", "hat", "hammer", "saw",
                    "big", "quickly", "run", "eat", "12", "5", "Tom", "Mary", "apple", "bread", "red", "blue", "the",
                    "of", ",", ".", "a", "in", "that", "he", "it", "for", "with", "on", "as", "at", "by", "from",
                    "said", "made", "came", "house", "day", "people", "water", "old", "new", "good", "little", "time",
                    "way", "year", "world", "word", "work", "back")
_GENERIC = {"words", "word", "names", "name", "of", "for", "about", "such", "as", "or", "and", "the", "a", "to", "in",
            "that", "which", "tokens", "token"}


def window_words(text: str) -> list[str]:
    """The words of a window as the word-level questions show them: split at whitespace, surrounding
    punctuation stripped (a word of punctuation only stays as it is).

    Example:
        >>> window_words('When Tom, aged 7, said "no".')
        ['When', 'Tom', 'aged', '7', 'said', 'no']
    """
    out = []
    for w in text.split():
        core = w.strip(".,;:!?\"'()[]")
        out.append(core or w)
    return out


def _content(text: str) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", text.lower()) if w not in _GENERIC}


def references_for(explanation: str) -> list[str]:
    """The reference descriptions an explanation is compared with: those sharing no content word with it
    (an explanation "verbs" is not compared with the reference "verbs").

    Example:
        >>> "verbs" in references_for("verbs"), "verbs" in references_for("names of people")
        (False, True)
    """
    mine = _content(explanation)
    return [r for r in REFERENCE_DESCRIPTIONS if not (_content(r) & mine)]


def word_log_odds(scorer_lm: Any, description: str, words: list[str], *, batch_size: int = 16, seed: int = 0,
                  cache: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``[len(words)]`` log-odds of yes against no for ``Does the word fit the description?`` about each word.

    The worked examples (:data:`WORD_SHOTS`, order shuffled with ``seed``) and the description run once;
    each word is a row on that key/value cache. ``cache``: a dict that keeps the answers per (scorer,
    description, word), so that words already answered cost nothing (``il.explain_unit`` keeps one per
    call: the reference descriptions' answers are shared by its units, the explanation's by detection and
    fuzzing).
    Returns the log-odds and the cost of what was computed: ``passes``, ``tokens`` and ``cache_error``
    (the first computed word's log-odds on the cache against a plain pass; 0 when nothing was computed).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama", max_position_embeddings=1024)
        >>> odds, cost = word_log_odds(lm, "digits", ["7", "the"])
        >>> odds.shape, cost["passes"], cost["cache_error"] < 1e-3
        ((2,), 2, True)
    """
    key = (id(scorer_lm), getattr(scorer_lm, "name", ""), scorer_lm.n_ctx, seed, description)
    memo: dict = {} if cache is None else cache
    todo = list(dict.fromkeys(w for w in words if key + (w,) not in memo))
    got: dict[str, float] = {}
    cost: dict[str, Any] = {"passes": 0, "tokens": 0, "cache_error": 0.0, "shots": None}
    if todo:
        yes, no = yes_no_ids(scorer_lm)
        examples = list(WORD_SHOTS)
        random.Random(seed).shuffle(examples)
        for k in range(len(examples), -1, -1):    # a small context drops worked examples (in pairs: balanced)
            if k % 2 and k:
                continue
            turns: list[tuple[str, str]] = []
            for expl, item, y in examples[:k]:
                turns += [("user", single_question("fuzzing", expl, item)), ("assistant", "Yes" if y else "No")]
            turns.append(("user", single_question("fuzzing", description, HOLE)))
            prefix, tail = split_prompt(scorer_lm, chat_text(scorer_lm, turns, system=SINGLE_SYSTEM["fuzzing"]))
            rows = [encode(scorer_lm, w + tail) for w in todo]
            if not scorer_lm.n_ctx or len(prefix) + max(len(r) for r in rows) <= scorer_lm.n_ctx:
                break
        ps = PrefixScorer(scorer_lm, prefix, batch_size=batch_size)
        lp = ps.next_logprobs(rows)
        odds = (torch.logsumexp(lp[:, yes], -1) - torch.logsumexp(lp[:, no], -1)).double().numpy()
        ref = ps.full_pass(rows[0])
        cost = {"passes": ps.forward_calls, "tokens": ps.tokens_run, "shots": k,
                "cache_error": abs(float(torch.logsumexp(ref[yes], -1) - torch.logsumexp(ref[no], -1)) - float(odds[0]))}
        for w, o in zip(todo, odds):
            got[w] = memo[key + (w,)] = float(o)
    return np.array([got[w] if w in got else memo[key + (w,)] for w in words], dtype=np.float64), cost


def word_scores(scorer_lm: Any, explanation: str, words: list[str], *, batch_size: int = 16,
                seed: int = 0, cache: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``[len(words)]`` how much better ``explanation`` fits each word than any reference description does.

    Each description's log-odds (:func:`word_log_odds`) are first centred on their mean over
    :data:`BACKGROUND_WORDS` (the description's own yes-bias); a word's score is the explanation's
    centred log-odds minus the largest of the reference descriptions' (:func:`references_for`), so the
    word's own yes-bias cancels too. The decision threshold is 0: a word is called a fit when the scorer
    holds the explanation a better fit than every reference description. Nothing here sees the unit's
    labels. Returns the scores and the cost of what was computed: the explanation's passes and tokens, and
    the reference descriptions' (``reference_passes``, ``reference_tokens``); answers already in ``cache``
    (the references for an earlier unit, the explanation's words for detection before fuzzing) cost
    nothing.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama", max_position_embeddings=1024)
        >>> s, cost = word_scores(lm, "digits", ["7", "the"])
        >>> s.shape, cost["passes"] >= 2
        ((2,), True)
    """
    uniq = list(dict.fromkeys(words))
    allw = uniq + [w for w in BACKGROUND_WORDS if w not in uniq]
    bg = np.array([allw.index(w) for w in BACKGROUND_WORDS])
    # the explanation's answers are kept too: fuzzing's marked words are words of detection's windows
    cache = {} if cache is None else cache
    e, cost = word_log_odds(scorer_lm, explanation, allw, batch_size=batch_size, seed=seed, cache=cache)
    e = e - e[bg].mean()
    best = np.full(len(allw), -np.inf)
    ref_passes = ref_tokens = 0
    for r in references_for(explanation):
        o, c = word_log_odds(scorer_lm, r, allw, batch_size=batch_size, seed=seed, cache=cache)
        best = np.maximum(best, o - o[bg].mean())
        ref_passes, ref_tokens = ref_passes + c["passes"], ref_tokens + c["tokens"]
    s = e - best
    at = {w: i for i, w in enumerate(allw)}
    return np.array([s[at[w]] for w in words]), {"passes": cost["passes"], "tokens": cost["tokens"],
                                                 "reference_passes": ref_passes, "reference_tokens": ref_tokens,
                                                 "cache_error": cost["cache_error"], "words_asked": len(allw),
                                                 "shots": cost["shots"]}
