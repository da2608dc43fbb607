"""Edit sets of the counterfactual search: scoring them in batched passes (memoised), ordering them
for the beam, the guided best-first rounds on first-order estimates, and reducing a flipping set to
a minimal one (every strict subset scored up to :data:`MAX_BRUTE` operations).
"""

from __future__ import annotations

import itertools

import torch

from ..model import LM
from .scoring import Scorer, as_rows
from .words import Words, apply

BEAM_FLUENCY = 0.25  # goal margin one nat of log-perplexity rise costs in the beam, per unit of fluency
FLUENT_RISE = 0.3  # nats of mean log-perplexity an edit may add (over fluency) and still read well
MAX_BRUTE = 4  # edit sets up to this size are checked minimal by scoring all 2^k - 2 strict subsets
GUIDE_FLUENCY = 0.1  # nats of first-order goal drop one nat of log-probability is worth in the guided order, per fluency
PATIENCE = 1  # guided rounds spent after the n-th flip looking for flips that read well


def _log_ppl(s, i: int) -> float:
    return float("nan") if s.log_ppl is None else float(s.log_ppl[i])


def _nan_last(x: float) -> float:
    return x if x == x else float("inf")


def _beam_key(entry: tuple, lp0: float, fluency: float) -> float:
    """Beam order: ``g`` plus ``BEAM_FLUENCY · fluency`` times the rise of log-perplexity over the prompt's (falls do not count:
    a candidate that reads better than the prompt earns nothing over one that reads as well)."""
    g, lp = entry[0], entry[4]
    if fluency <= 0 or lp != lp or lp0 != lp0:
        return g
    return g + BEAM_FLUENCY * fluency * max(0.0, lp - lp0)


def _reads_well(entry: tuple, lp0: float, fluency: float) -> bool:
    """Whether an edit's log-perplexity rose at most ``FLUENT_RISE / fluency`` over the prompt's (always true
    with ``fluency=0`` or without perplexities: every flip then counts)."""
    lp = entry[4]
    if fluency <= 0 or lp != lp or lp0 != lp0:
        return True
    return lp - lp0 <= FLUENT_RISE / fluency


def _label(s, i: int) -> int | None:
    return None if s.per_label is None else int(s.per_label[i].argmax())


def _kind(st: frozenset) -> str:
    kinds = {{"del": "deletion", "sub": "substitution", "ins": "insertion"}[op[0]] for op in st}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _score(scorer: Scorer, lm: LM, w: Words, states: list[frozenset], memo: dict) -> None:
    """Score edit sets (batched), filling ``memo[state] = (g, value, label index, queries so far)``."""
    states = [st for st in states if st not in memo]
    if not states:
        return
    texts = [apply(w, st)[0] for st in states]
    empty = [not t.strip() for t in texts]
    keep = [st for st, e in zip(states, empty) if not e]
    for st, e in zip(states, empty):
        if e:  # an edit that deletes everything is no prompt: never a counterfactual
            memo[st] = (float("inf"), float("nan"), None, scorer.queries, float("nan"))
    if not keep:
        return
    rows = as_rows(lm.tokenize([apply(w, st)[0] for st in keep]))
    base = scorer.queries
    s = scorer.rows(rows)
    for k, st in enumerate(keep):
        memo[st] = (float(s.goal[k]), float(s.value[k]), _label(s, k), base + k + 1, _log_ppl(s, k))


def _guided(scorer: Scorer, lm: LM, w: Words, ranked: list[int], est: dict[tuple, float], memo: dict, *, n: int,
            max_edits: int, positions: int, per_round: int, max_queries: int, lp0: float, fluency: float,
            gen: torch.Generator, batch_size: int = 32) -> tuple[list[frozenset], bool]:
    """Best-first search on first-order estimates: the ``per_round`` edit sets of lowest predicted ``g`` are
    scored in one batched pass per round (twice as many after a round without a flip, up to
    ``2 batch_size``); their children (one more operation at the ``positions``
    highest-ranked untouched words) are predicted from the measured ``g`` of their parent plus the
    operation's estimate ``est[op]`` (first-order change of ``g`` minus ``GUIDE_FLUENCY · fluency`` times
    its change of log-probability). Stops at ``n`` flips (``n`` that read well with ``fluency > 0``, or
    ``PATIENCE`` rounds after the ``n``-th flip), or when the budget or the candidates run out.

    Returns the flipping sets found and whether the budget ran out."""
    pending: dict[frozenset, tuple[float, float]] = {}  # unscored edit set -> (predicted g, seeded tie)
    flips: list[frozenset] = []
    by_word: dict[int, list[tuple]] = {}
    for op in est:
        by_word.setdefault(op[1], []).append(op)

    def expand(st: frozenset) -> None:
        if len(st) >= max_edits:
            return
        touched = {op[1] for op in st}
        free = [i for i in ranked if i not in touched][:positions]
        g_parent = memo[st][0]
        for i in free:
            for op in by_word.get(i, []):
                new = st | {op}
                if new in memo or any(f <= new for f in flips):
                    continue
                guess = g_parent + est[op]
                if new not in pending or guess < pending[new][0]:
                    pending[new] = (guess, pending[new][1] if new in pending else
                                    float(torch.rand(1, generator=gen)))

    expand(frozenset())
    exhausted = False
    extra = dry = 0
    while pending:
        budget = max_queries - scorer.queries
        if budget <= 0:
            exhausted = True
            break
        # a round that brings no flip doubles the next one (up to two batches): estimates that miss
        # cost a few rounds, not one pass per per_round candidates through the whole budget
        size = min(per_round * 2 ** dry, max(per_round, 2 * batch_size))
        batch = sorted(pending, key=lambda st: pending[st])[:min(size, budget)]
        for st in batch:
            del pending[st]
        _score(scorer, lm, w, batch, memo)
        before = len(flips)
        for st in batch:
            if memo[st][0] < 0:
                flips.append(st)
        dry = dry + 1 if len(flips) == before else 0
        for f in [st for st in batch if memo[st][0] < 0]:
            for st in [st for st in pending if f <= st]:
                del pending[st]
        for st in batch:
            if memo[st][0] >= 0:
                expand(st)
        if sum(_reads_well(memo[st], lp0, fluency) for st in flips) >= n:
            break
        if len(flips) >= n:
            extra += 1
            if extra > PATIENCE:
                break
    return flips, exhausted


def _minimize(scorer: Scorer, lm: LM, w: Words, st: frozenset, memo: dict, max_queries: int,
              lp0: float = float("nan"), fluency: float = 0.0) -> tuple[frozenset, bool | None]:
    """A minimal flipping subset of ``st`` (no strict subset of it flips) and whether that is verified.

    The smallest such subset; with ``fluency > 0`` the one that reads well first (a larger
    minimal subset that reads well beats a smaller one that breaks the text)."""
    ops = sorted(st, key=lambda op: (op[1], op[0]))
    if len(ops) == 1:
        return st, True  # its only strict subset is the prompt, which does not flip
    if len(ops) <= MAX_BRUTE:
        subsets = [frozenset(c) for k in range(1, len(ops)) for c in itertools.combinations(ops, k)]
        todo = [s for s in subsets if s not in memo]
        if len(todo) > max_queries - scorer.queries:
            return st, None  # no budget left to verify
        _score(scorer, lm, w, todo, memo)
        flipping = [s for s in subsets if memo[s][0] < 0]
        if not flipping:
            return st, True
        minimal = [s for s in flipping if not any(t < s for t in flipping)]
        return min(minimal, key=lambda s: (not _reads_well(memo[s], lp0, fluency), len(s),
                                           _nan_last(memo[s][4]) if fluency > 0 else 0.0, memo[s][0])), True
    cur = st
    for op in ops:  # greedy pruning of large sets: drop each operation the flip does not need
        smaller = cur - {op}
        if smaller not in memo:
            if scorer.queries >= max_queries:
                break
            _score(scorer, lm, w, [smaller], memo)
        if memo[smaller][0] < 0:
            cur = smaller
    return cur, None
