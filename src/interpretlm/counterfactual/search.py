"""``il.counterfactuals``: the smallest edits of a prompt that flip what the model says.

The search (one call, one prompt):

1. **Rank words** by an attribution of the core (default ``input_x_gradient``: one forward
   and one backward pass) of the goal ``g`` (see :mod:`.scoring`): the words pushing the
   prediction hardest toward its current side are edited first.
2. **Candidates** for each word, from one forward and one backward pass on the prompt: the
   model's own next-token distribution at the word's position (fluent substitutions and
   insertions) and the embedding gradient (HotFlip: the tokens whose embedding change
   lowers ``g`` most to first order); deletions need none.
3. **Beam search** over edit sets (each a set of operations on original words), one word
   more per depth, candidates scored in batched forward passes that reuse the key/value
   cache of their shared prefix (:class:`.scoring.Scorer`). Edit sets that flip are kept;
   the ``beam`` lowest-``g`` others are expanded.
4. **Minimality** (Ablation Flip's guarantee, for every kind of edit): every strict subset
   of a flipping set of up to ``MAX_BRUTE`` operations is scored, and the smallest flipping
   subset is returned, so no strict subset of a returned set flips (``minimal=True``).
   Larger sets are pruned greedily (``minimal=None``: not verified).
5. **Order**: by words changed, then perplexity under the model (the most fluent of equally
   small edits first), then how far past the goal they go. ``queries`` counts the goal's
   evaluations; the perplexities of the (at most ``4 n``) finalists are forward passes too.

The query budget counts every row the model scores (the prompt itself included). When it
runs out, or the search space does, before anything flips, the edit with the lowest ``g``
is returned with ``flipped=False`` and a :class:`NotFlippedWarning`.
"""

from __future__ import annotations

import functools
import itertools
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InterpretLMError, InterpretLMWarning, OptionError, TargetError
from ..model import LM
from ..registry import CheckSpec, call, register
from ..targets import FunctionTarget, Target, TargetLike, as_target, gather_at, prediction_positions
from ..tokens import special_token_ids
from .result import Counterfactuals
from .scoring import LAST_POSITION_KINDS, Goal, Scorer, as_rows, make_goal, orient, perplexity
from .words import WORD, Words, apply, diff, levenshtein, split

MAX_BRUTE = 4  # edit sets up to this size are checked minimal by scoring all 2^k - 2 strict subsets
KINDS = ("delete", "substitute", "insert")


class NotFlippedWarning(InterpretLMWarning):
    """No edit flipped the target within the budget or the search space: the best one is returned unflipped."""


class NothingToEditError(InterpretLMError, ValueError):
    """The prompt has no word the search may edit (all protected, special or outside the prompt)."""


def _editable(lm: LM, text: str, w: Words, keep: Sequence[str]) -> tuple[list[bool], list[list[int]], Any]:
    """Which words may change, each word's token positions, and the tokenized prompt."""
    batch = lm.tokenize(text)
    offsets = batch.offsets[0]
    special = batch.special[0].tolist()
    in_prompt = batch.in_prompt[0].tolist()
    tokens: list[list[int]] = []
    ok: list[bool] = []
    for s, e in w.spans:
        pos = [j for j, (a, b) in enumerate(offsets) if b > a and a < e and b > s]
        tokens.append(pos)
        ok.append(bool(pos) and all(in_prompt[j] and not special[j] for j in pos))
    for phrase in keep:  # a kept phrase protects every occurrence of its word sequence
        seq = split(str(phrase)).words
        if not seq:
            raise OptionError(f"keep={list(keep)!r}: {phrase!r} holds no word.")
        for i in range(len(w) - len(seq) + 1):
            if tuple(x.lower() for x in w.words[i:i + len(seq)]) == tuple(x.lower() for x in seq):
                for j in range(i, i + len(seq)):
                    ok[j] = False
    return ok, tokens, batch


@functools.lru_cache(maxsize=8)
def _word_like(tokenizer: Any, vocab_size: int, needs_space: bool) -> tuple[list[str], torch.Tensor]:
    """Each vocabulary token's word (``""`` when it is not one whole word with the right leading space).

    Cached per tokenizer: decoding a 50k vocabulary takes a second, and every call needs it.
    """
    specials = special_token_ids(tokenizer)
    decoded = tokenizer.batch_decode([[v] for v in range(vocab_size)])
    words, good = [], torch.zeros(vocab_size, dtype=torch.bool)
    for v in range(vocab_size):
        d = decoded[v] if v not in specials else ""
        word = d.strip()
        fine = bool(word) and WORD.fullmatch(word) is not None and not word.startswith("##") \
            and (d.startswith(" ") or not needs_space) and not (d[:1].isspace() and d[1:2].isspace())
        words.append(word if fine else "")
        good[v] = fine
    return words, good


def _goal_of(goal: Goal, lm: LM):
    """``fn(logits, batch) -> g [batch]`` for targets read at the prediction position."""
    def g(logits: torch.Tensor, batch) -> torch.Tensor:
        return goal.from_last_logits(gather_at(logits, prediction_positions(lm, batch)))[0]
    return g


@register("counterfactuals", family="counterfactual", takes="prompt", result=Counterfactuals,
          summary="smallest word deletions / substitutions / insertions that flip the prediction (beam search)",
          check=CheckSpec("flip_rate", 1.0, higher_is_better=True,
                          advice="No edit flipped the target: raise max_queries, max_edits or beam, or protect "
                                 "fewer words."),
          demo="interpretlm.counterfactual.demo_section:counterfactuals_section", demo_order=80)
def counterfactuals(lm: LM, inputs: Any, target: TargetLike, *, n: int = 3, max_edits: int = 3, beam: int = 3,
                    positions: int = 4, candidates: int = 4, insertions: int = 2, max_queries: int = 1000,
                    keep: Sequence[str] = (), threshold: float | None = None, direction: str = "auto",
                    ranking: str = "input_x_gradient", kinds: Sequence[str] = KINDS, hotflip_pool: int = 500,
                    reuse_cache: bool = True,
                    batch_size: int = 32, seed: int = 0) -> Counterfactuals:
    """Find up to ``n`` minimal edits of the prompt that flip ``target``.

    Args:
        lm: the model.
        inputs: a prompt (token ids are decoded to text first: edits are on words).
        target: a :class:`~interpretlm.targets.Label` (flips when the predicted label
            changes), a :class:`~interpretlm.targets.Contrast` (when its sign changes), or
            any target with ``threshold=`` (when its value crosses it).
        n: edits to return (the smallest first).
        max_edits: most words changed in one edit (the beam's depth).
        beam: edit sets kept per depth.
        positions: the highest-ranked untouched words tried per expansion.
        candidates: substitutes per word from each source (model distribution, HotFlip).
        insertions: words inserted before each tried word (from the model's distribution).
        max_queries: the budget of model evaluations (rows scored; the prompt is one).
        keep: words or phrases that must not change (every occurrence is protected).
        threshold: the value to cross for targets other than labels (overrides a contrast's 0).
        direction: ``"auto"`` (leave the prompt's side), ``"down"`` or ``"up"`` (must end
            below / above ``threshold``; an error if the prompt already is).
        ranking: the attribution method ranking words (any ``il.attribute`` method).
        kinds: edit kinds used, a subset of ``("delete", "substitute", "insert")``.
        hotflip_pool: HotFlip picks among the model's ``hotflip_pool`` likeliest tokens at the
            word's position (fluent); 0: the whole vocabulary (the original HotFlip).
        reuse_cache: score candidates from the shared prefix's key/value cache.
        batch_size: candidates per forward pass.
        seed: breaks ties between equally ranked words and candidates.

    Returns:
        :class:`~interpretlm.counterfactual.result.Counterfactuals`: ``edits`` (each with
        text, word diff, new value, flipped, distance, Δ perplexity, queries), ``flip_rate``,
        ``minimality``, ``fluency``, ``diversity``.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama", seed=0)
        >>> cf = il.counterfactuals(lm, "The movie was good and the food was bad", il.Contrast(" good", " bad"))
        >>> cf.method, len(cf.edits) >= 1, cf.check.name
        ('counterfactuals', True, 'flip_rate')
    """
    start = time.perf_counter()
    for name, value, low in (("n", n, 1), ("max_edits", max_edits, 1), ("beam", beam, 1), ("positions", positions, 1),
                             ("candidates", candidates, 0), ("insertions", insertions, 0),
                             ("batch_size", batch_size, 1), ("hotflip_pool", hotflip_pool, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise OptionError(f"{name} must be an int >= {low}; got {value!r}.")
    if not isinstance(max_queries, int) or max_queries < 2:
        raise OptionError(f"max_queries={max_queries!r} leaves no query for a single candidate: scoring the prompt "
                          "itself takes one. Give max_queries >= 2 (hundreds for a real search).")
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise OptionError(f"kinds must be a non-empty subset of {KINDS}; got {kinds!r}.")
    if isinstance(keep, str):
        keep = [keep]
    text = inputs if isinstance(inputs, str) else lm.tokenizer.decode(as_rows(lm.tokenize(inputs))[0])
    if not text.strip():
        from ..errors import EmptyInputError
        raise EmptyInputError("The prompt is empty: give a text whose words may be edited.")
    bound = as_target(target, lm)
    if isinstance(bound, FunctionTarget) and threshold is None:
        raise TargetError("A function target needs threshold= (the value the counterfactual must cross).")
    if hasattr(bound, "label_ids") and len(bound.label_ids) < 2:
        raise TargetError("A Label target needs at least two labels for its prediction to change.")
    goal = make_goal(bound, threshold, direction)
    w = split(text)
    editable, word_tokens, batch = _editable(lm, text, w, keep)
    if not any(editable):
        raise NothingToEditError(
            f"No word of the prompt may be edited ({len(w)} words; protected by keep={list(keep)!r}, or special "
            "tokens). Protect fewer words.")
    scorer = Scorer(lm, goal, batch_size=batch_size, reuse_cache=reuse_cache)
    original = as_rows(batch)[0]
    s0 = scorer.rows([original])
    goal = orient(goal, float(s0.value[0]), None if s0.per_label is None else s0.per_label[0], direction)
    g0 = float(goal.goal(s0.value, s0.per_label)[0])
    gen = torch.Generator().manual_seed(int(seed))
    passes = {"forward": 0, "backward": 0}

    # 1. ranking: an attribution of g (or of the target, signed) to the prompt's tokens
    rank_target: Target = FunctionTarget(_goal_of(goal, lm), name="counterfactual goal") \
        if isinstance(bound, LAST_POSITION_KINDS) else bound
    with warnings.catch_warnings():  # the attribution's own check is not this result's
        warnings.simplefilter("ignore")
        att = call(ranking, lm, text, rank_target)
    scores = np.asarray(att.scores, dtype=float)
    scores = np.nansum(scores, axis=0) if scores.ndim == 2 else scores
    tok_score: dict[int, float] = {}
    for feat, pos in enumerate(att.feature_tokens):
        for p in pos:
            tok_score[p] = tok_score.get(p, 0.0) + float(scores[feat]) / len(pos)
    sign = 1.0 if isinstance(bound, LAST_POSITION_KINDS) else goal.sign
    word_score = [sign * sum(tok_score.get(p, 0.0) for p in pos) for pos in word_tokens]
    passes["forward"] += int(att.diagnostics.get("forward_passes", 1))
    passes["backward"] += int(att.diagnostics.get("backward_passes", 1))
    tie = torch.randperm(len(w), generator=gen).tolist()
    ranked = sorted((i for i in range(len(w)) if editable[i]), key=lambda i: (-word_score[i], tie[i]))

    # 2. substitution / insertion candidates: the model's distribution and HotFlip, on the prompt
    subs, ins = _candidates(lm, goal, bound, batch, w, word_tokens, ranked, candidates, insertions, kinds, hotflip_pool)
    passes["forward"] += 1
    passes["backward"] += 1

    # 3. beam search
    memo: dict[frozenset, tuple[float, float, int | None, int]] = {frozenset(): (g0, float(s0.value[0]),
                                                                                  _label(s0, 0), 1)}
    flips: list[frozenset] = []
    frontier: list[frozenset] = [frozenset()]
    exhausted = False
    for depth in range(max_edits):
        cands: list[frozenset] = []
        for state in frontier:
            touched = {op[1] for op in state if op[0] != "ins"}
            inserted = {op[1] for op in state if op[0] == "ins"}
            free = [i for i in ranked if i not in touched and i not in inserted][:positions]
            for i in free:
                ops: list[tuple] = []
                if "delete" in kinds:
                    ops.append(("del", i))
                ops += [("sub", i, s) for s in subs.get(i, [])]
                if i not in inserted:
                    ops += [("ins", i, s) for s in ins.get(i, [])]
                for op in ops:
                    new = state | {op}
                    if new in memo or new in cands or any(f <= new for f in flips):
                        continue
                    cands.append(new)
        if not cands:
            break
        order = torch.randperm(len(cands), generator=gen).tolist()  # seeded order of equals
        cands = [cands[k] for k in order]
        cands.sort(key=lambda st: -min(op[1] for op in st))  # neighbours share long prefixes
        budget = max_queries - scorer.queries
        if budget <= 0:
            exhausted = True
            break
        if len(cands) > budget:
            cands, exhausted = cands[:budget], True
        _score(scorer, lm, w, cands, memo)
        new_flips = [st for st in cands if memo[st][0] < 0]
        flips += new_flips
        rest = sorted((st for st in cands if memo[st][0] >= 0), key=lambda st: memo[st][0])
        frontier = rest[:beam]
        if len(flips) >= n or exhausted:
            break

    # 4. minimality: the smallest flipping subset of each flipping set
    final: dict[frozenset, bool | None] = {}
    for st in sorted(flips, key=lambda st: (len(st), memo[st][0])):
        best, minimal = _minimize(scorer, lm, w, st, memo, max_queries)
        if best not in final or (minimal and not final[best]):
            final[best] = minimal
    # among the flips of the smallest distances, the most fluent first (perplexity under the model)
    pool = sorted(final, key=lambda st: (levenshtein(w.words, apply(w, st)[1]), memo[st][0]))[:4 * n]
    if pool:
        chosen = [(st, final[st]) for st in pool]
    else:
        tried = [st for st in memo if st]
        if not tried:
            raise InterpretLMError("No candidate edit could be built for this prompt (every edit empties it).")
        best = min(tried, key=lambda st: (memo[st][0], len(st)))
        chosen = [(best, None)]

    # 5. the edits, with fluency
    texts = [text] + [apply(w, st)[0] for st, _ in chosen]
    tb = lm.tokenize(texts)
    marks = [[bool(tb.in_prompt[i, j]) and not bool(tb.special[i, j]) for j in range(int(tb.lengths[i]))]
             for i in range(tb.size)]
    ppl = perplexity(lm, as_rows(tb), marks, batch_size=batch_size)
    passes["forward"] += -(-len(texts) // batch_size)
    order = sorted(range(len(chosen)), key=lambda k: (levenshtein(w.words, apply(w, chosen[k][0])[1]),
                                                      ppl[k + 1] if ppl[k + 1] is not None else 0.0,
                                                      memo[chosen[k][0]][0]))[:n]
    chosen = [chosen[k] for k in order]
    texts = [text] + [texts[k + 1] for k in order]
    ppl = [ppl[0]] + [ppl[k + 1] for k in order]
    labels = goal.labels
    edits = []
    for (st, minimal), new_text, p in zip(chosen, texts[1:], ppl[1:]):
        g, value, label, queries = memo[st]
        new_words = apply(w, st)[1]
        dist = levenshtein(w.words, new_words)
        edits.append({
            "text": new_text, "words": new_words, "diff": diff(w.words, new_words),
            "ops": [list(op) for op in sorted(st, key=lambda op: (op[1], op[0]))],
            "kind": _kind(st), "value": value, "goal": g, "label": labels[label] if label is not None else None,
            "flipped": g < 0, "distance": dist, "minimality": dist / len(w), "minimal": minimal,
            "perplexity": p, "delta_perplexity": None if p is None or ppl[0] is None else p - ppl[0],
            "queries": queries})
    flipped = [e for e in edits if e["flipped"]]
    result = Counterfactuals(
        prompt=text, words=list(w.words), editable=editable, word_scores=word_score,
        original_value=float(s0.value[0]), original_goal=g0,
        original_label=labels[goal.label_index] if goal.label_index is not None else None, labels=labels,
        goal=goal.mode, threshold=goal.threshold, direction="down" if goal.sign > 0 else "up",
        original_perplexity=ppl[0], edits=edits, tokens=list(batch.tokens[0]), special=batch.special[0].tolist())
    d = result.diagnostics
    d["flip_rate"] = len(flipped) / len(edits)
    d["minimality"] = float(np.mean([e["minimality"] for e in flipped])) if flipped else None
    dp = [e["delta_perplexity"] for e in flipped if e["delta_perplexity"] is not None]
    d["fluency"] = float(np.mean(dp)) if dp else None
    d["diversity"] = result.diversity
    d["queries"] = scorer.queries
    d["forward_passes"] = scorer.forward_passes + passes["forward"]
    d["backward_passes"] = passes["backward"]
    d["tokens_run"] = scorer.tokens_run
    d["tokens_full"] = scorer.tokens_full
    d["cache_saving"] = 1 - scorer.tokens_run / scorer.tokens_full if scorer.tokens_full else 0.0
    d["budget_exhausted"] = exhausted
    d["seconds"] = time.perf_counter() - start
    if not flipped:
        why = "the query budget ran out" if exhausted else "the search space was exhausted"
        result.warn(f"counterfactuals: no edit flipped the target ({why} after {scorer.queries} queries); the edit "
                    f"that came closest (g {edits[0]['goal']:+.4g}, from {g0:+.4g}) is returned with flipped=False. "
                    "Raise max_queries, max_edits, beam or positions.", NotFlippedWarning)
    return result


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
            memo[st] = (float("inf"), float("nan"), None, scorer.queries)
    if not keep:
        return
    rows = as_rows(lm.tokenize([apply(w, st)[0] for st in keep]))
    base = scorer.queries
    s = scorer.rows(rows)
    for k, st in enumerate(keep):
        memo[st] = (float(s.goal[k]), float(s.value[k]), _label(s, k), base + k + 1)


def _minimize(scorer: Scorer, lm: LM, w: Words, st: frozenset, memo: dict,
              max_queries: int) -> tuple[frozenset, bool | None]:
    """The smallest flipping subset of ``st`` and whether it is verified minimal."""
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
        return min(flipping, key=lambda s: (len(s), memo[s][0])), True
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


def _candidates(lm: LM, goal: Goal, bound: Target, batch, w: Words, word_tokens: list[list[int]], ranked: list[int],
                k_sub: int, k_ins: int, kinds: tuple[str, ...], pool: int
                ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Substitutes and insertions per editable word, from one forward and one backward pass on the prompt.

    The distribution source reads the logits predicting the word's first token (position
    ``p - 1`` on causal models, ``p`` on masked ones); HotFlip scores every token ``v`` by
    ``(E[v] - E[x_p]) · ∂g/∂E[x_p]`` and keeps the lowest (the largest first-order drop of ``g``).
    """
    embed = lm.model.get_input_embeddings()
    ids = batch.input_ids.to(lm.device)
    emb = embed(ids).detach().requires_grad_(True)  # [1, pos, d_model]
    out = lm.forward(batch, inputs_embeds=emb, grad=True)
    if isinstance(bound, LAST_POSITION_KINDS):
        g = goal.from_last_logits(gather_at(out.logits, prediction_positions(lm, out.batch)))[0]
    else:
        g = goal.goal(bound(out).float(), None)
    g.sum().backward()
    grad = emb.grad[0].detach().float()  # [pos, d_model]
    logits = out.logits[0].detach().float() if out.logits is not None else None  # [pos, vocab]
    with torch.no_grad():
        table = embed(torch.arange(lm.vocab_size, device=lm.device)).float()  # [vocab, d_model], scaled as the model
    spaced_words, spaced = _word_like(lm.tokenizer, lm.vocab_size, True)
    bare_words, bare = _word_like(lm.tokenizer, lm.vocab_size, False)
    subs: dict[int, list[str]] = {}
    ins: dict[int, list[str]] = {}
    for i in ranked:
        p = word_tokens[i][0]
        vocab_words, allowed = (spaced_words, spaced) if w.spaces[i] else (bare_words, bare)
        own = {w.words[i].lower()}
        dist: list[str] = []
        src = p - 1 if lm.is_causal else p
        if logits is not None and src >= 0:
            dist = _top_words(logits[src], allowed, vocab_words, own, k_sub + k_ins)
        grad_score = (table - table[ids[0, p]]) @ grad[p]  # [vocab] first-order change of g
        fluent = allowed
        if pool and logits is not None and src >= 0:
            # HotFlip over the whole vocabulary picks rare word pieces that flip but read as noise;
            # among the model's own likeliest tokens here it stays fluent
            likely = logits[src].topk(min(pool, lm.vocab_size)).indices.cpu()
            fluent = allowed & torch.zeros_like(allowed).index_fill_(0, likely, True)
        flip = _top_words(-grad_score, fluent, vocab_words, own, k_sub)
        if "substitute" in kinds:
            merged = []
            for word in dist[:k_sub] + flip:
                if word not in merged:
                    merged.append(word)
            subs[i] = merged
        if "insert" in kinds and k_ins and w.words[i][:1].isalnum():
            ins[i] = dist[:k_ins]
    return subs, ins


def _top_words(score: torch.Tensor, allowed: torch.Tensor, words: list[str], exclude: set[str], k: int) -> list[str]:
    """The ``k`` allowed tokens of highest ``score`` ``[vocab]``, as distinct words (not in ``exclude``)."""
    if k <= 0:
        return []
    masked = torch.where(allowed.to(score.device), score, torch.full_like(score, -torch.inf))
    order = masked.argsort(descending=True, stable=True)
    out: list[str] = []
    for v in order[: max(4 * k, 64)].tolist():
        if not bool(allowed[v]):
            break
        word = words[v]
        if word.lower() not in exclude and word not in out:
            out.append(word)
            if len(out) == k:
                break
    return out
