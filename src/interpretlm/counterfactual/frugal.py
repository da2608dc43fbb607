"""The query-frugal search (``search="frugal"``): the model's own label-conditioned next-word
distributions rank every edit before any candidate is scored.

First-order (HotFlip) estimates of a whole-word swap barely correlate with its measured effect
on SmolLM2-135M (a word swap is no small step in embedding space), so they cannot choose the
few candidates worth a query. What does: the model's next-word distribution at every position
of the prompt *given that the answer is each label*. One batched pass scores the prompt behind
a cue stating each label (``"Sentiment: negative\\n"`` + prompt: the prompt's last line, which
asks the question, followed by the label's verbalizer; the verbalizer alone for one-line
prompts), ``labels`` rows, each one query. The *label evidence* of word ``u`` at position ``p``
for another label ``o`` is ``e_o(u) = log p(u | cue_o, x_<p) - log p(u | cue_current, x_<p)``
(how much likelier the model finds ``u`` there when the answer is ``o``: a naive-Bayes reading
of the model itself). An operation is ranked by the evidence it adds for the best other label:
substitution ``x -> v``: ``e_o(v) - e_o(x)``; deletion: ``-e_o(x)``; insertion of ``v``:
``e_o(v)``. Candidates are whole words of the original's kind from the conditioned
distributions of the other labels (the words the model expects if the answer were another
label: a topic word of another topic, an antonym), the plain distribution, the word's
nearest tokens in the input embedding and, for words that start with a letter or digit, the other
labels' own verbalizer words (``"food"`` for a text on sports: on the built-in topic texts this
source took the flip rate of the development split from 0.90 to 1.00, as conditioned words of the
prompt's own topic rarely carry another topic's evidence).

Rounds: the ``per_round`` best-ranked single operations are scored in one cached batch; while
fewer than ``n`` flip, the next round extends the scored edit set of lowest measured ``g`` by
the best-ranked operations on words it leaves untouched (its children never scored yet), up to
``max_edits`` operations, until the budget or the candidates run out, or ``QUERIES_PER_EDIT ·
max_edits`` queries in a row bring no flip (at ``max_edits=3``: 30 queries spent in vain; a
search that gives up early is what keeps the mean cost near the typical one). The limit counts
queries, not rounds, so a smaller ``per_round`` costs fewer queries on the easy inputs without
giving up sooner on the hard ones. Operations are taken word by word in turn (:func:`by_word_turns`:
every word's best operation before any word's second): the evidence of one position is read
from one next-word distribution, and a word whose distribution favours many candidates (``and``
→ ``but``, ``until``, ``except`` … after a negative clause, given a positive answer) would
otherwise take a dozen queries before another word is tried.

For targets without labels (a ``threshold=`` on a next-token value or a function) there is no
label to condition on, and operations are ranked by their first-order estimate instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model import LM
from ..targets import Contrast, Label
from ..tokens import special_token_ids
from .candidates import PromptPass, _alnum_of, estimate, token_of_word, word_like
from .edit_sets import _score
from .scoring import Goal, Scorer
from .words import Words

DIST_WORDS = 8  # candidates per word from each conditioned distribution (other labels) and the plain one
NEAR_WORDS = 8  # candidates per word from its nearest tokens in the input embedding
INSERT_WORDS = 2  # insertions per word from each other label's conditioned distribution
QUERIES_PER_EDIT = 10  # queries without a flip allowed per operation of max_edits before the search gives up


def _top_words(score: torch.Tensor, allowed: torch.Tensor, words: list[str], exclude: set[str], k: int,
               token_of: dict, at: int) -> list[str]:
    """The ``k`` allowed tokens of highest ``score`` ``[vocab]`` as distinct words not in ``exclude``
    (``topk`` over the allowed ones, not a sort of the vocabulary: this runs per word and label);
    each word's token goes to ``token_of[(at, word)]``."""
    if k <= 0:
        return []
    masked = torch.where(allowed, score, torch.full_like(score, -torch.inf))
    top = masked.topk(min(max(4 * k, 64), int(allowed.sum()))).indices.tolist()
    out: list[str] = []
    for v in top:
        word = words[v]
        if word.lower() not in exclude and word not in out:
            out.append(word)
            token_of.setdefault((at, word), v)
            if len(out) == k:
                break
    return out


def label_cues(lm: LM, goal: Goal, text: str) -> list[tuple[int | None, str]]:
    """``(label index, cue)`` per label of a ``Label`` or ``Contrast`` goal (``[]`` for other targets).

    The cue is the prompt's last line followed by the label's verbalizer and a newline
    (the verbalizer alone for one-line prompts). A contrast's two tokens are its labels
    (index ``None``: its side is the contrast's sign).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.counterfactual.scoring import make_goal
        >>> lm = tiny_lm("llama")
        >>> t = il.Label({"good": [" good"], "bad": [" bad"]}).bind(lm)
        >>> label_cues(lm, make_goal(t, None, "auto"), "Review: fine.\\nSentiment:")
        [(0, 'Sentiment: good\\n'), (1, 'Sentiment: bad\\n')]
    """
    names = _verbalizers(lm, goal)
    if not names:
        return []
    lines = text.rstrip().rsplit("\n", 1)
    head = lines[1].rstrip() if len(lines) == 2 and lines[1].strip() else ""
    out = []
    for k, verbal in names:
        verbal = verbal if head else verbal.strip()
        out.append((k, head + (verbal if verbal[:1].isspace() or not head else " " + verbal) + "\n"))
    return out


def _verbalizers(lm: LM, goal: Goal) -> list[tuple[int | None, str]]:
    """``(label index, first verbalizer token as text)`` per label of a ``Label`` or ``Contrast`` goal."""
    t = goal.target
    if goal.mode == "threshold" or not isinstance(t, (Label, Contrast)):
        return []
    if isinstance(t, Label):
        return [(k, lm.tokenizer.decode(ids[:1])) for k, ids in enumerate(t.label_ids.values())]
    return [(None, lm.tokenizer.decode([i])) for i in t.ids[:2]]


def label_words(lm: LM, goal: Goal, current: int) -> list[str]:
    """The verbalizer words (first token, stripped) of every label but the ``current``-th, in label order.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.counterfactual.scoring import make_goal
        >>> lm = tiny_lm("llama")
        >>> label_words(lm, make_goal(il.Contrast(" Paris", " Rome").bind(lm), None, "auto"), 0)
        ['Rome']
    """
    return [v.strip() for k, (_, v) in enumerate(_verbalizers(lm, goal)) if k != current and v.strip()]


def conditioned_logprobs(lm: LM, scorer: Scorer, ids: torch.Tensor, cues: list[str]) -> torch.Tensor:
    """``[cues, pos, vocab]`` log-probabilities of the next token at each prompt position behind each cue.

    Row ``c``, position ``j`` is ``log p(· | cue_c, ids[:j + 1])`` (the distribution of token
    ``j + 1``); the prompt's leading special tokens (a BOS) stay first. One batched pass,
    one query per cue (counted on ``scorer``).
    """
    ids = ids.tolist()
    specials = special_token_ids(lm.tokenizer)
    lead = 0
    while lead < len(ids) and ids[lead] in specials:
        lead += 1
    rows, offsets = [], []
    for cue in cues:
        pre = lm.tokenizer(cue, add_special_tokens=False)["input_ids"]
        rows.append(ids[:lead] + pre + ids[lead:])
        offsets.append(len(pre))
    logprobs = scorer.next_token_logprobs(rows)  # [cues, longest, vocab]
    # the prompt's token j sits at j + off (j >= lead); its next-token distribution is read there
    return torch.stack([logprobs[c, [j if j < lead else j + off for j in range(len(ids))]]
                        for c, off in enumerate(offsets)])


def rank_operations(lm: LM, pp: PromptPass, w: Words, word_tokens: list[list[int]], ranked: list[int],
                    kinds: tuple[str, ...], cond: torch.Tensor | None, current: int | None,
                    fluency: float, tokens: dict | None = None,
                    labels: Sequence[str] = ()) -> list[tuple[float, tuple]]:
    """Every operation on the ranked words with its score (higher: more evidence for another label).

    ``cond`` ``[labels, pos, vocab]`` are the label-conditioned log-probabilities
    (:func:`conditioned_logprobs`) and ``current`` the row of the prompt's label; without them
    (``None``) the score is minus the first-order estimate of the change of ``g``
    (:func:`.candidates.estimate`). ``labels`` (:func:`label_words`) are substitution candidates
    for every word that starts with a letter or digit.

    Returns ``[(score, op), ...]``, best first (ties in ``ranked`` order); ``tokens``, when given,
    receives each candidate's token id as ``tokens[(word index, word)]``.
    """
    spaced_words, spaced = word_like(lm.tokenizer, lm.vocab_size, True)
    bare_words, bare = word_like(lm.tokenizer, lm.vocab_size, False)
    alnum = _alnum_of(tuple(spaced_words)), _alnum_of(tuple(bare_words))
    norms = pp.table.norm(dim=-1).clamp(min=1e-8).cpu()  # [vocab]: cosine similarity without a normalized copy
    plain = torch.log_softmax(pp.logits, -1).cpu() if pp.logits is not None else None  # [pos, vocab]
    others = [] if cond is None else [c for c in range(cond.shape[0]) if c != current]
    scored: list[tuple[float, int, tuple]] = []
    for rank, i in enumerate(ranked):
        p = word_tokens[i][0]
        src = p - 1 if lm.is_causal else p
        if src < 0:
            continue
        words, allowed = (spaced_words, spaced) if w.spaces[i] else (bare_words, bare)
        kind = alnum[0] if w.spaces[i] else alnum[1]
        allowed = allowed & (kind if w.words[i][:1].isalnum() else ~kind)
        own = {w.words[i].lower()}
        token_of: dict = {}
        subs: list[str] = []
        ins: list[str] = []
        if cond is not None:
            for o in others:
                subs += _top_words(cond[o, src], allowed, words, own | set(subs), DIST_WORDS, token_of, i)
                if "insert" in kinds and w.words[i][:1].isalnum():
                    ins += _top_words(cond[o, src], allowed, words, set(ins), INSERT_WORDS, token_of, i)
        if plain is not None:
            subs += _top_words(plain[src], allowed, words, own | set(subs), DIST_WORDS, token_of, i)
        subs += _top_words((pp.table @ pp.table[pp.ids[p]]).cpu() / norms, allowed, words, own | set(subs),
                           NEAR_WORDS, token_of, i)
        if w.words[i][:1].isalnum():
            subs += [x for x in labels if x.lower() not in own and x not in subs]
        ops: list[tuple] = [("del", i)] if "delete" in kinds else []
        if "substitute" in kinds:
            ops += [("sub", i, s) for s in subs]
        if "insert" in kinds:
            ops += [("ins", i, s) for s in ins]
        x = int(pp.ids[p])
        ev = None if cond is None else cond[others][:, src] - cond[current, src]  # [others, vocab] evidence per token
        for op in ops:
            tok = None if op[0] == "del" else token_of.get((i, op[2]))
            if tok is None and op[0] != "del":
                tok = token_of_word(lm, op[2], bool(w.spaces[i]))
            if tokens is not None and op[0] != "del":
                tokens[(i, op[2])] = tok
            if cond is not None:
                gain = -ev[:, x] if op[0] == "del" else ev[:, tok] - (ev[:, x] if op[0] == "sub" else 0.0)
                score = float(gain.max())
                if fluency > 0 and op[0] != "del":  # among equal evidence, the word the model finds likelier
                    score += 0.1 * fluency * float(cond[others, src, tok].max())
            else:
                dg, dlogp = estimate(lm, pp, w, word_tokens, op, tok)
                score = -(dg - 0.1 * fluency * dlogp)
            scored.append((score, rank, op))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [(s, op) for s, _, op in scored]


def by_word_turns(order: list[tuple]) -> list[tuple]:
    """``order`` (operations, best first) rearranged in turns: each word's best operation, then each
    word's second best, … (within a turn, the original order).

    Example:
        >>> by_word_turns([("sub", 6, "but"), ("sub", 6, "until"), ("sub", 10, "good"), ("del", 6)])
        [('sub', 6, 'but'), ('sub', 10, 'good'), ('sub', 6, 'until'), ('del', 6)]
    """
    seen: dict[int, int] = {}
    turn = []
    for op in order:
        turn.append(seen.get(op[1], 0))
        seen[op[1]] = turn[-1] + 1
    return [op for _, _, op in sorted(zip(turn, range(len(order)), order))]


def frugal_search(scorer: Scorer, lm: LM, w: Words, ops: list[tuple[float, tuple]], memo: dict, *, n: int,
                  max_edits: int, per_round: int, max_queries: int, lp0: float,
                  fluency: float) -> tuple[list[frozenset], bool]:
    """Score the best-ranked operations ``per_round`` at a time; without ``n`` flips, extend the scored
    edit set of lowest ``g`` by the best-ranked operations on words it leaves untouched.

    ``ops`` is :func:`rank_operations`' list. Returns the flipping sets and whether the budget ran out.
    """
    order = by_word_turns([op for _, op in ops])
    flips: list[frozenset] = []
    tried: dict[frozenset, int] = {}  # parent -> how far down ``order`` its children were taken

    def children(parent: frozenset, k: int) -> list[frozenset]:
        touched = {op[1] for op in parent}
        out, at = [], tried.get(parent, 0)
        while at < len(order) and len(out) < k:
            op = order[at]
            at += 1
            new = parent | {op}
            if op[1] in touched or new in memo or any(f <= new for f in flips):
                continue
            out.append(new)
        tried[parent] = at
        return out

    exhausted = False
    dry = 0  # queries since the last flip
    while dry < QUERIES_PER_EDIT * max_edits:
        budget = max_queries - scorer.queries
        if budget <= 0:
            exhausted = True
            break
        parents = sorted((st for st in memo if len(st) < max_edits and memo[st][0] >= 0
                          and tried.get(st, 0) < len(order)), key=lambda st: (memo[st][0], len(st)))
        batch: list[frozenset] = []
        for parent in parents:  # the lowest-g edit first; the next ones when its children run out
            batch += children(parent, min(per_round, budget) - len(batch))
            if len(batch) >= min(per_round, budget):
                break
        if not batch:
            break
        _score(scorer, lm, w, batch, memo)
        found = [st for st in batch if memo[st][0] < 0]
        flips += found
        dry = 0 if found else dry + len(batch)
        if len(flips) >= n:  # frugal: the first n flips end it (the beam goes on for ones that read well)
            break
    return flips, exhausted
