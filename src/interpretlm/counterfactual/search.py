"""``il.counterfactuals``: the smallest edits of a prompt that flip what the model says.

The search (one call, one prompt):

1. **One pass on the prompt** (:func:`.candidates.prompt_pass`, default ``ranking="input_x_gradient"``):
   one forward pass scores the prompt (its one query), fixes the goal ``g``'s side, keeps the
   logits of every position, and one backward pass gives ``∂g/∂emb``. Words are ranked by
   gradient × input of ``g`` (the numbers ``il.attribute``'s ``input_x_gradient`` gives; another
   ``ranking=`` method runs through the registry on top): the words pushing the prediction
   hardest toward its current side are edited first.
2. **Candidates** for each word, from that same pass: the
   model's own next-token distribution at the word's position (fluent substitutions and
   insertions), the embedding gradient (HotFlip: the tokens whose embedding change
   lowers ``g`` most to first order) and, when the user gives one, a masked language model
   (``mlm=``: its fill-ins for the word masked); deletions need none. With ``fluency > 0`` the
   word's nearest tokens in the model's input embedding are a fourth source, and a
   word is only replaced by one of its own kind (letters/digits by letters/digits,
   punctuation by punctuation), and HotFlip's first-order drop is traded against the
   candidate's log-probability under the model (``0.1 fluency`` nats of drop per nat).
3. **Search.** ``search="beam"`` (default): beam search over edit sets (each a set of operations on original words), one word
   more per depth, candidates scored in batched forward passes that reuse the key/value
   cache of their shared prefix (:class:`.scoring.Scorer`), which with ``fluency > 0`` also
   returns each candidate's perplexity under the model (no extra query); with ``fluency > 0``
   the candidates of the highest-ranked words are scored first, a batch at a time, and a
   depth stops at the batch that brings ``n`` flips that read well. Edit sets that flip
   are kept; the ``beam`` others of lowest ``g + 0.25 fluency · Δlog perplexity`` are expanded.
   ``search="guided"``: best-first on first-order estimates from the prompt's pass, no further
   gradient: every operation gets a predicted change of ``g`` (substitution: HotFlip's
   ``(E[new] - E[old]) · ∇``; deletion: minus gradient × input; insertion: as a substitution of
   the slot it takes) minus ``0.1 fluency`` times its change of ``log p(word | prefix)`` read from
   the prompt's logits (free); the ``per_round`` edit sets of lowest predicted ``g`` (a scored
   parent's measured ``g`` plus the operation's estimate) are scored in one cached batch per
   round, and the search widens (next round, twice as wide after one without a flip) only
   while not enough flip.
   ``search="frugal"`` (:mod:`.frugal`): first-order estimates barely predict a whole-word swap's
   effect, so for ``Label`` and ``Contrast`` targets one batched pass scores the prompt behind a
   cue stating each label (one query per label) and every operation is ranked by the label
   evidence it adds (``log p(word | cue_other) - log p(word | cue_current)`` at its position,
   substitutes from those conditioned distributions, the plain one, the embedding neighbours
   and the other labels' verbalizer words); operations are taken each word's best in turn, the
   ``per_round`` best (default 1) are scored per round, and rounds without a flip extend the
   edit of lowest measured ``g``. Other targets are ranked by first-order estimates. It stops
   at the first ``n`` flips, or after ``10 max_edits`` queries without one.
4. **Minimality** (Ablation Flip's guarantee, for every kind of edit): every strict subset
   of a flipping set of up to ``MAX_BRUTE`` operations is scored, and the smallest flipping
   subset is returned, so no strict subset of a returned set flips (``minimal=True``).
   Larger sets are pruned greedily (``minimal=None``: not verified).
5. **Order**: with ``fluency > 0``, edits that read well (mean log-perplexity at most
   ``0.3 / fluency`` nats above the prompt's, i.e. perplexity × 1.35 at ``fluency=1``) come
   first, and only such a flip ends the search early: the smallest *fluent* edit, a larger
   one if the smallest flips all break the text (those stay as fallbacks). Then by words changed, then perplexity under the model (the most fluent of equally
   small edits first: with ``fluency > 0`` every flipping set found is ranked by the
   perplexity its scoring pass measured, so the finalists are the most fluent of all the
   smallest flips, not the ones that go furthest past the goal), then how far past the goal
   they go. With ``fluency_model=`` each returned edit's perplexity is also measured under
   that second model. ``queries`` counts the goal's
   evaluations (the prompt's pass is one; its backward pass is counted in ``backward_passes``,
   not in ``queries``); the finalists' perplexities come from the passes that scored them
   (a further forward pass only for chat-formatted prompts, whose scaffolding they leave out).

The query budget counts every row the model scores (the prompt itself included). When it
runs out, or the search space does, before anything flips, the edit with the lowest ``g``
is returned with ``flipped=False`` and a :class:`NotFlippedWarning`.
"""

from __future__ import annotations

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
from .result import Counterfactuals
from .scoring import LAST_POSITION_KINDS, Goal, Scorer, as_rows, make_goal, orient, perplexity
from .edit_sets import (GUIDE_FLUENCY, _beam_key, _guided, _kind, _label, _log_ppl, _minimize, _nan_last, _reads_well,
                        _score)
from .frugal import conditioned_logprobs, frugal_search, label_cues, label_words, rank_operations
from .candidates import estimate, mlm_candidates, prompt_pass, token_of_word, word_candidates
from .words import Words, apply, diff, levenshtein, split

KINDS = ("delete", "substitute", "insert")
SEARCHES = ("guided", "beam", "frugal")


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
                    reuse_cache: bool = True, fluency: float = 1.0, mlm: LM | str | None = None,
                    fluency_model: LM | str | None = None, search: str = "beam", per_round: int | None = None,
                    label_substitutes: bool = True, batch_size: int = 32, seed: int = 0) -> Counterfactuals:
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
        fluency: weight of fluency against the goal (causal models): 0 ranks candidates by
            the goal alone (the search of interpretlm 0.x before fluency); above 0, words are
            replaced only by words of their own kind, HotFlip trades first-order goal drop
            against the candidate's log-probability (``0.1 fluency`` per nat) among tokens at
            most ``5 / fluency`` nats less likely than the original, the beam keeps
            the lowest ``g + 0.25 fluency · Δlog perplexity``, flips that raise the mean
            log-perplexity by more than ``0.3 / fluency`` nats rank after those that do not (the
            search goes one word deeper for a fluent flip), equally small flips are ranked
            by perplexity, the word's nearest tokens in the input embedding are a further
            source of substitutes, and candidates are scored highest-ranked words first, a
            batch at a time, until ``n`` flips read well.
        mlm: a masked language model (an encoder ``LM`` with a mask token, or a name / folder
            for ``il.load``): a third source of substitutions, its ``candidates`` likeliest
            whole words for each word masked.
        fluency_model: a second causal ``LM`` (or a name / folder): each edit's perplexity and
            Δ perplexity under it too (``perplexity_second``, ``delta_perplexity_second``;
            the set's mean as ``fluency_second``).
        search: ``"beam"`` (the beam search above), ``"guided"`` (best-first on first-order
            estimates, ``per_round`` candidates a round) or ``"frugal"`` (edits ranked by the
            label evidence of the model's label-conditioned next-word distributions, one query
            per label, then ``per_round`` candidates a round; the fewest queries); see the
            module's docstring. ``mlm=``, ``candidates``, ``insertions``, ``positions``, ``beam``
            and ``hotflip_pool`` are the beam's and guided search's: the frugal search takes its
            own candidates.
        per_round: ``search="guided"`` / ``"frugal"``: edit sets scored per round (one batched pass);
            default 4 for the guided search and 1 for the frugal one (one candidate a round: on
            the built-in evaluation set its first-ranked edit alone flips 34% of the reviews and
            46% of the topic texts, and 1 a round spent the fewest queries of 1–4 at the same or
            more flips).
        label_substitutes: ``search="frugal"``: the other labels' verbalizer words are substitutes for
            every word (``"food"`` for a word of a text on sports). They flip more texts in fewer queries,
            but the edit then names the label it moves to, a shallow counterfactual; ``False`` keeps to the
            words of the model's distributions and the embedding's neighbours (edits that seldom name a
            label outright). The README's counterfactual section gives figures for both.
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
    if per_round is None:
        per_round = 1 if search == "frugal" else 4
    for name, value, low in (("n", n, 1), ("max_edits", max_edits, 1), ("beam", beam, 1), ("positions", positions, 1),
                             ("candidates", candidates, 0), ("insertions", insertions, 0),
                             ("batch_size", batch_size, 1), ("hotflip_pool", hotflip_pool, 0),
                             ("per_round", per_round, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise OptionError(f"{name} must be an int >= {low}; got {value!r}.")
    if not isinstance(max_queries, int) or max_queries < 2:
        raise OptionError(f"max_queries={max_queries!r} leaves no query for a single candidate: scoring the prompt "
                          "itself takes one. Give max_queries >= 2 (hundreds for a real search).")
    if search not in SEARCHES:
        raise OptionError(f"search must be one of {SEARCHES}; got {search!r}.")
    if not isinstance(label_substitutes, bool):
        raise OptionError(f"label_substitutes must be True or False; got {label_substitutes!r}.")
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise OptionError(f"kinds must be a non-empty subset of {KINDS}; got {kinds!r}.")
    if isinstance(keep, str):
        keep = [keep]
    if not isinstance(fluency, (int, float)) or isinstance(fluency, bool) or not fluency >= 0:
        raise OptionError(f"fluency must be a number >= 0; got {fluency!r}.")
    mlm_lm = _model_option("mlm", mlm)
    if mlm_lm is not None and (mlm_lm.is_causal or getattr(mlm_lm.tokenizer, "mask_token_id", None) is None):
        raise OptionError(f"mlm={mlm_lm.name!r} is not a masked language model with a mask token: give an encoder "
                          "such as BERT (or leave mlm=None).")
    second = _model_option("fluency_model", fluency_model)
    if second is not None and not second.is_causal:
        raise OptionError(f"fluency_model={second.name!r} is a masked model: perplexity needs a causal model.")
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
    scorer = Scorer(lm, goal, batch_size=batch_size, reuse_cache=reuse_cache, fluency=fluency > 0)
    original = as_rows(batch)[0]
    gen = torch.Generator().manual_seed(int(seed))
    passes = {"forward": 0, "backward": 0}

    # 1. the prompt's pass: its value (one query), g's gradient (ranking and HotFlip) and all its logits
    def side(value: float, per_label: Any) -> Goal:
        return orient(goal, value, per_label, direction)

    fused = ranking == "input_x_gradient"
    if fused:
        pp = prompt_pass(lm, goal, bound, batch, side)
        scorer.queries += 1  # the prompt's forward pass is its one evaluation
        goal, g0, value0 = scorer.goal, pp.goal, pp.value
        label0 = None if pp.per_label is None else int(pp.per_label[0].argmax())
        lp0 = float(scorer.log_ppl_of(pp.logits, pp.ids)) if scorer.fluency and pp.logits is not None \
            else float("nan")
        tok_score = {p: float(v) for p, v in enumerate(pp.token_scores.tolist())}
        sign = 1.0
    else:
        s0 = scorer.rows([original])
        goal = side(float(s0.value[0]), None if s0.per_label is None else s0.per_label[0])
        g0, value0, label0, lp0 = float(goal.goal(s0.value, s0.per_label)[0]), float(s0.value[0]), _label(s0, 0), \
            _log_ppl(s0, 0)
        # an attribution of g (or of the target, signed) to the prompt's tokens
        rank_target: Target = FunctionTarget(_goal_of(goal, lm), name="counterfactual goal") \
            if isinstance(bound, LAST_POSITION_KINDS) else bound
        with warnings.catch_warnings():  # the attribution's own check is not this result's
            warnings.simplefilter("ignore")
            att = call(ranking, lm, text, rank_target)
        scores = np.asarray(att.scores, dtype=float)
        scores = np.nansum(scores, axis=0) if scores.ndim == 2 else scores
        tok_score = {}
        for feat, pos in enumerate(att.feature_tokens):
            for p in pos:
                tok_score[p] = tok_score.get(p, 0.0) + float(scores[feat]) / len(pos)
        sign = 1.0 if isinstance(bound, LAST_POSITION_KINDS) else goal.sign
        passes["forward"] += int(att.diagnostics.get("forward_passes", 1))
        passes["backward"] += int(att.diagnostics.get("backward_passes", 1))
        pp = prompt_pass(lm, goal, bound, batch, lambda v, p: goal)
    passes["forward"] += 1
    passes["backward"] += 1
    word_score = [sign * sum(tok_score.get(p, 0.0) for p in pos) for pos in word_tokens]
    tie = torch.randperm(len(w), generator=gen).tolist()
    ranked = sorted((i for i in range(len(w)) if editable[i]), key=lambda i: (-word_score[i], tie[i]))

    # 2. substitution / insertion candidates: the model's distribution and HotFlip, on the prompt
    subs, ins, token_of = ({}, {}, {}) if search == "frugal" else word_candidates(
        lm, pp, w, word_tokens, ranked, candidates, insertions, kinds, hotflip_pool, fluency)
    if mlm_lm is not None and "substitute" in kinds and candidates and search != "frugal":
        for i, extra in mlm_candidates(mlm_lm, w, ranked, candidates, fluency > 0).items():
            subs[i] = subs.get(i, []) + [x for x in extra if x not in subs.get(i, [])]
        passes["mlm_forward"] = 1

    # 3. the search
    memo: dict[frozenset, tuple[float, float, int | None, int, float]] = {
        frozenset(): (g0, value0, label0, 1, lp0)}
    flips: list[frozenset] = []
    frontier: list[frozenset] = [frozenset()]
    exhausted = False
    rank_of = {i: r for r, i in enumerate(ranked)}
    first_flip: int | None = None  # the depth of the first flip
    if search == "guided":
        est = {}
        for i in ranked:
            ops = ([("del", i)] if "delete" in kinds else []) + [("sub", i, x) for x in subs.get(i, [])] + \
                  [("ins", i, x) for x in ins.get(i, [])]
            for op in ops:
                tok = None if op[0] == "del" else token_of.get((i, op[2]))
                if tok is None and op[0] != "del":
                    tok = token_of_word(lm, op[2], bool(w.spaces[i]))
                dg, dlogp = estimate(lm, pp, w, word_tokens, op, tok)
                est[op] = dg - GUIDE_FLUENCY * fluency * dlogp
        flips, exhausted = _guided(scorer, lm, w, ranked, est, memo, n=n, max_edits=max_edits, positions=positions,
                                   per_round=per_round, max_queries=max_queries, lp0=lp0, fluency=fluency, gen=gen,
                                   batch_size=batch_size)
    if search == "frugal":
        cues = label_cues(lm, goal, text)
        cond, current = None, None
        if cues and max_queries - scorer.queries > len(cues):
            # one batched pass behind a cue per label: the model's next-word distributions given each answer
            cond = conditioned_logprobs(lm, scorer, pp.ids, [c for _, c in cues])
            if goal.mode == "label":
                current = [k for k, _ in cues].index(goal.label_index)
            else:  # a contrast: its first token's cue is the current side when the contrast is positive
                current = 0 if goal.sign > 0 else 1
        ops = rank_operations(lm, pp, w, word_tokens, ranked, kinds, cond, current, fluency,
                              labels=label_words(lm, goal, current) if cond is not None and label_substitutes else [])
        flips, exhausted = frugal_search(scorer, lm, w, ops, memo, n=n, max_edits=max_edits, per_round=per_round,
                                         max_queries=max_queries, lp0=lp0, fluency=fluency)
    for depth in range(max_edits if search == "beam" else 0):
        cands: list[frozenset] = []
        priority: dict[frozenset, tuple[int, int]] = {}  # (word rank, beam place) of the operation added here
        for place, state in enumerate(frontier):
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
                    if new in memo or new in priority or any(f <= new for f in flips):
                        continue
                    cands.append(new)
                    priority[new] = (rank_of[i], place)
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
        if fluency > 0:
            # the highest-ranked words' candidates first, one batch at a time, stopping at the batch that
            # brings enough fluent flips: the rest of the depth would only cost queries
            by_rank = sorted(cands, key=lambda st: priority[st])
            scored: list[frozenset] = []
            for c in range(0, len(by_rank), batch_size):
                chunk = sorted(by_rank[c:c + batch_size], key=lambda st: -min(op[1] for op in st))
                _score(scorer, lm, w, chunk, memo)
                scored += chunk
                if sum(_reads_well(memo[st], lp0, fluency) for st in flips + scored if memo[st][0] < 0) >= n:
                    break
            cands = scored
        else:
            _score(scorer, lm, w, cands, memo)
        new_flips = [st for st in cands if memo[st][0] < 0]
        flips += new_flips
        rest = sorted((st for st in cands if memo[st][0] >= 0), key=lambda st: _beam_key(memo[st], lp0, fluency))
        frontier = rest[:beam]
        # with fluency, only fluent flips end the search early: one more word (no more) may buy a flip that
        # reads well, so the edits stay at most one word larger than the smallest flip
        if first_flip is None and flips:
            first_flip = depth
        if sum(_reads_well(memo[st], lp0, fluency) for st in flips) >= n or exhausted or \
                (fluency > 0 and first_flip is not None and depth >= first_flip + 1):
            break

    # 4. minimality: the smallest flipping subset of each flipping set
    final: dict[frozenset, bool | None] = {}
    for st in sorted(flips, key=lambda st: (len(st), memo[st][0])):
        best, minimal = _minimize(scorer, lm, w, st, memo, max_queries, lp0, fluency)
        if best not in final or (minimal and not final[best]):
            final[best] = minimal
    # among the flips of the smallest distances, the most fluent first (perplexity under the model)
    fluent = fluency > 0 and lp0 == lp0
    pool = sorted(final, key=lambda st: (not _reads_well(memo[st], lp0, fluency),
                                         levenshtein(w.words, apply(w, st)[1]),
                                         _nan_last(memo[st][4]) if fluent else 0.0, memo[st][0]))[:4 * n]
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
    lps = [lp0] + [memo[st][4] for st, _ in chosen]
    if scorer.fluency and all(all(bool(x) for x in tb.in_prompt[i, :int(tb.lengths[i])]) for i in range(tb.size)) \
            and all(lp == lp for lp in lps):
        # the scoring passes measured these perplexities already (the same tokens: the whole prompt)
        ppl: list[float | None] = [float(np.exp(lp)) for lp in lps]
    else:
        ppl = perplexity(lm, as_rows(tb), marks, batch_size=batch_size)
        passes["forward"] += -(-len(texts) // batch_size)
    order = sorted(range(len(chosen)), key=lambda k: (not _reads_well(memo[chosen[k][0]], lp0, fluency),
                                                      levenshtein(w.words, apply(w, chosen[k][0])[1]),
                                                      ppl[k + 1] if ppl[k + 1] is not None else 0.0,
                                                      memo[chosen[k][0]][0]))[:n]
    chosen = [chosen[k] for k in order]
    texts = [text] + [texts[k + 1] for k in order]
    ppl = [ppl[0]] + [ppl[k + 1] for k in order]
    ppl2: list[float | None] = [None] * len(texts)
    if second is not None:  # the same texts' perplexity under the second model, its own tokens
        sb = second.tokenize(texts)
        marks2 = [[bool(sb.in_prompt[i, j]) and not bool(sb.special[i, j]) for j in range(int(sb.lengths[i]))]
                  for i in range(sb.size)]
        ppl2 = perplexity(second, as_rows(sb), marks2, batch_size=batch_size)
        passes["fluency_model_forward"] = -(-len(texts) // batch_size)
    labels = goal.labels
    edits = []
    for (st, minimal), new_text, p, p2 in zip(chosen, texts[1:], ppl[1:], ppl2[1:]):
        g, value, label, queries, _ = memo[st]
        new_words = apply(w, st)[1]
        dist = levenshtein(w.words, new_words)
        edits.append({
            "text": new_text, "words": new_words, "diff": diff(w.words, new_words),
            "ops": [list(op) for op in sorted(st, key=lambda op: (op[1], op[0]))],
            "kind": _kind(st), "value": value, "goal": g, "label": labels[label] if label is not None else None,
            "flipped": g < 0, "distance": dist, "minimality": dist / len(w), "minimal": minimal,
            "perplexity": p, "delta_perplexity": None if p is None or ppl[0] is None else p - ppl[0],
            "perplexity_second": p2,
            "delta_perplexity_second": None if p2 is None or ppl2[0] is None else p2 - ppl2[0],
            "queries": queries})
    flipped = [e for e in edits if e["flipped"]]
    result = Counterfactuals(
        prompt=text, words=list(w.words), editable=editable, word_scores=word_score,
        original_value=value0, original_goal=g0,
        original_label=labels[goal.label_index] if goal.label_index is not None else None, labels=labels,
        goal=goal.mode, threshold=goal.threshold, direction="down" if goal.sign > 0 else "up",
        original_perplexity=ppl[0], fluency_model=second.name if second is not None else None,
        original_perplexity_second=ppl2[0], edits=edits, tokens=list(batch.tokens[0]),
        special=batch.special[0].tolist())
    d = result.diagnostics
    d["flip_rate"] = len(flipped) / len(edits)
    d["minimality"] = float(np.mean([e["minimality"] for e in flipped])) if flipped else None
    dp = [e["delta_perplexity"] for e in flipped if e["delta_perplexity"] is not None]
    d["fluency"] = float(np.mean(dp)) if dp else None
    if second is not None:
        d["fluency_second"] = result.fluency_second
    d["diversity"] = result.diversity
    d["queries"] = scorer.queries
    d["forward_passes"] = scorer.forward_passes + passes["forward"]
    d["backward_passes"] = passes["backward"]
    for k in ("mlm_forward", "fluency_model_forward"):
        if k in passes:
            d[k + "_passes"] = passes[k]
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


def _model_option(name: str, value: LM | str | None) -> LM | None:
    """An ``LM`` option given as a loaded model or as something ``il.load`` opens (a name or folder)."""
    if value is None or isinstance(value, LM):
        return value
    if isinstance(value, str):
        from ..loading import load
        return load(value)
    raise OptionError(f"{name} must be a loaded model (il.load(...)) or a name / folder il.load opens; "
                      f"got {type(value).__name__}.")
