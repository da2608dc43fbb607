"""Substitution and insertion candidates for each editable word: the model's own next-token
distribution, HotFlip's embedding gradient, the nearest tokens in the input embedding and, when
the user gives one, a masked language model (step 2 of :mod:`.search`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import OptionError
from ..model import LM
from ..targets import Target, gather_at, prediction_positions
from ..tokens import special_token_ids
from .scoring import LAST_POSITION_KINDS, Goal
from .words import WORD, Words

HOTFLIP_FLOOR = 5.0  # HotFlip keeps tokens at most this many nats (over fluency) less likely than the original
HOTFLIP_FLUENCY = 0.1  # nats of first-order goal drop one nat of log-probability is worth, per unit of fluency


@functools.lru_cache(maxsize=8)
def word_like(tokenizer: Any, vocab_size: int, needs_space: bool) -> tuple[list[str], torch.Tensor]:
    """Each vocabulary token's word (``""`` when it is not one whole word with the right leading space).

    Cached per tokenizer: decoding a 50k vocabulary takes a second, and every call needs it.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> words, good = word_like(lm.tokenizer, lm.vocab_size, True)
        >>> words[lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]], len(words) == len(good)
        ('Mary', True)
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


@dataclass
class PromptPass:
    """What one forward and one backward pass on the prompt give the search.

    Attributes:
        value: the target's value on the prompt.
        per_label: ``[1, labels]`` per-label log-probabilities (``Label`` targets) or ``None``.
        goal: ``g`` on the prompt (after the goal's side was fixed from ``value``).
        ids: ``[pos]`` the prompt's token ids.
        emb: ``[pos, d_model]`` its input embeddings (as the model scales them).
        grad: ``[pos, d_model]`` ``∂g/∂emb``.
        logits: ``[pos, vocab]`` the logits at every position (``None`` for a model without a head).
        table: ``[vocab, d_model]`` the input-embedding table, scaled as the model scales it.
        gdot: ``[vocab, pos]`` ``E[v] · ∂g/∂emb_p``: HotFlip's first-order change of ``g`` is
            ``gdot[v, p] - gdot[x_p, p]``.
    """

    value: float
    per_label: torch.Tensor | None
    goal: float
    ids: torch.Tensor
    emb: torch.Tensor
    grad: torch.Tensor
    logits: torch.Tensor | None
    table: torch.Tensor
    gdot: torch.Tensor

    @property
    def token_scores(self) -> torch.Tensor:
        """``[pos]`` gradient × input of ``g`` per token (``il.attribute``'s ``input_x_gradient``)."""
        return (self.emb * self.grad).sum(-1)


def prompt_pass(lm: LM, goal: Goal, bound: Target, batch, orient: Callable[[float, Any], Goal]) -> PromptPass:
    """One forward and one backward pass on the prompt: its value, ``g``, ``∂g/∂emb`` and all its logits.

    The goal's side is fixed (``orient(value, per_label)``) from the forward pass's output before
    the backward pass, so the prompt is scored, ranked (gradient × input) and given HotFlip
    candidates by the same pass (one model evaluation of the prompt, one backward pass).
    """
    embed = lm.model.get_input_embeddings()
    ids = batch.input_ids.to(lm.device)
    emb = embed(ids).detach().requires_grad_(True)  # [1, pos, d_model]
    out = lm.forward(batch, inputs_embeds=emb, grad=True)
    if isinstance(bound, LAST_POSITION_KINDS):
        last = gather_at(out.logits, prediction_positions(lm, out.batch))
        _, value, per = goal.from_last_logits(last.detach())
        goal = orient(float(value[0]), per[0] if per is not None else None)
        g = goal.from_last_logits(last)[0]
    else:
        value = bound(out).float()
        per = None
        goal = orient(float(value.detach()[0]), None)
        g = goal.goal(value, None)
    g.sum().backward()
    grad = emb.grad[0].detach().float()  # [pos, d_model]
    with torch.no_grad():
        table = embed(torch.arange(lm.vocab_size, device=lm.device)).float()  # [vocab, d_model], scaled as the model
    logits = out.logits[0].detach().float() if out.logits is not None else None  # [pos, vocab]
    return PromptPass(float(value.detach()[0]), None if per is None else per.detach(), float(g.detach()[0]),
                      ids[0], emb.detach()[0].float(), grad, logits, table, table @ grad.T)


def word_candidates(lm: LM, pp: PromptPass, w: Words, word_tokens: list[list[int]],
                    ranked: list[int], k_sub: int, k_ins: int, kinds: tuple[str, ...], pool: int,
                    fluency: float = 0.0) -> tuple[dict[int, list[str]], dict[int, list[str]], dict]:
    """Substitutes and insertions per editable word, from the prompt's pass (:func:`prompt_pass`).

    The distribution source reads the logits predicting the word's first token (position
    ``p - 1`` on causal models, ``p`` on masked ones); HotFlip scores every token ``v`` by
    ``(E[v] - E[x_p]) · ∂g/∂E[x_p]`` and keeps the lowest (the largest first-order drop of ``g``);
    with ``fluency > 0`` it keeps the highest ``-score + 0.1 fluency · log p(v)`` instead (words the
    distribution source already gave excepted) among tokens at most ``5 / fluency`` nats less
    likely than the original token, and every
    source keeps only words of the original's kind (letters/digits or punctuation): a word
    replaced by a stray bracket or quote flips cheaply but reads as noise.

    Returns ``subs``, ``ins`` (words per word index) and ``token_of``: ``{(i, word): token id}``
    of every candidate (its first-order estimate needs it, :func:`estimate`).
    """
    ids, logits, table, gdot = pp.ids, pp.logits, pp.table, pp.gdot
    spaced_words, spaced = word_like(lm.tokenizer, lm.vocab_size, True)
    bare_words, bare = word_like(lm.tokenizer, lm.vocab_size, False)
    subs: dict[int, list[str]] = {}
    ins: dict[int, list[str]] = {}
    token_of: dict[tuple[int, str], int] = {}
    alnum = _alnum_of(tuple(spaced_words)), _alnum_of(tuple(bare_words))
    unit = torch.nn.functional.normalize(table, dim=-1) if fluency > 0 else None  # [vocab, d_model]
    for i in ranked:
        p = word_tokens[i][0]
        vocab_words, allowed = (spaced_words, spaced) if w.spaces[i] else (bare_words, bare)
        if fluency > 0:  # words of the original's kind only (letters/digits, or punctuation)
            kind = alnum[0] if w.spaces[i] else alnum[1]
            allowed = allowed & (kind if w.words[i][:1].isalnum() else ~kind)
        own = {w.words[i].lower()}
        dist: list[str] = []
        src = p - 1 if lm.is_causal else p
        if logits is not None and src >= 0:
            dist = _top_words(logits[src], allowed, vocab_words, own, k_sub + k_ins, token_of, i)
        grad_score = gdot[:, p] - gdot[ids[p], p]  # [vocab] first-order change of g
        fluent = allowed
        if pool and logits is not None and src >= 0:
            # HotFlip over the whole vocabulary picks rare word pieces that flip but read as noise;
            # among the model's own likeliest tokens here it stays fluent
            likely = logits[src].topk(min(pool, lm.vocab_size)).indices.cpu()
            fluent = allowed & torch.zeros_like(allowed).index_fill_(0, likely, True)
        key, taken = -grad_score, own
        if fluency > 0 and logits is not None and src >= 0:
            # a floor under the candidates' log-probability, below the original token's: the cheapest flips
            # are tokens that break the text ("moving." -> "moving["), which no fluency ranking recovers
            logp = torch.log_softmax(logits[src], -1)
            floor = float(logp[ids[p]]) - HOTFLIP_FLOOR / fluency
            fluent = fluent & (logp >= floor).cpu()
            # first-order drops of g are ~1 here while log-probabilities spread over ~10 nats: an
            # unscaled sum would turn HotFlip into the distribution source, so log p counts a tenth
            key = key + HOTFLIP_FLUENCY * fluency * logp
            taken = own | {x.lower() for x in dist[:k_sub]}  # new words, not the distribution's again
        flip = _top_words(key, fluent, vocab_words, taken, k_sub, token_of, i)
        near: list[str] = []
        if unit is not None:
            # the word's nearest tokens in the model's input embedding (cosine): same kind of word, often the
            # same part of speech, and fluent where the distribution source only repeats the context's guess
            near = _top_words(unit @ unit[ids[p]], allowed, vocab_words, own | {x.lower() for x in dist[:k_sub]},
                              k_sub, token_of, i)
        if "substitute" in kinds:
            merged = []
            for word in dist[:k_sub] + near + flip:
                if word not in merged:
                    merged.append(word)
            subs[i] = merged
        if "insert" in kinds and k_ins and w.words[i][:1].isalnum():
            ins[i] = dist[:k_ins]  # before a word of letters/digits, so with fluency > 0 words of that kind
    return subs, ins, token_of


def estimate(lm: LM, pp: PromptPass, w: Words, word_tokens: list[list[int]], op: tuple,
             token: int | None) -> tuple[float, float]:
    """First-order change of ``g`` and change of log-probability of one operation, from the prompt's pass.

    * substitution of word ``i`` (tokens ``p, q...``) by token ``v``: ``(E[v] - E[x_p]) · ∇_p`` (HotFlip)
      minus ``E[x_q] · ∇_q`` for the word's further tokens (they go);
    * deletion: ``-Σ E[x_p] · ∇_p`` over the word's tokens (gradient × input: the token's embedding to 0);
    * insertion of ``v`` before word ``i``: as a substitution of the slot ``p`` it takes, ``(E[v] - E[x_p]) · ∇_p``.

    The fluency term is ``log p(new | prefix) - log p(old | prefix)`` at the edited slot, read from
    the prompt's logits (the word after a deleted word takes its place): 0 where there are none.
    ``token`` is the new word's (first) token, ``None`` for deletions.
    """
    kind, i = op[0], op[1]
    toks = word_tokens[i]
    p = toks[0]
    xs = pp.token_scores
    if kind == "del":
        dg = -float(xs[toks].sum())
    else:
        assert token is not None
        dg = float(pp.gdot[token, p] - pp.gdot[pp.ids[p], p])
        if kind == "sub":
            dg -= float(xs[toks[1:]].sum()) if len(toks) > 1 else 0.0
    src = p - 1 if lm.is_causal else p
    dlogp = 0.0
    if pp.logits is not None and src >= 0:
        logp = torch.log_softmax(pp.logits[src], -1)
        if kind == "del":
            nxt = toks[-1] + 1
            if nxt < len(pp.ids):
                dlogp = float(logp[pp.ids[nxt]] - logp[pp.ids[p]])
        else:
            dlogp = float(logp[token] - logp[pp.ids[p]])
    return dg, dlogp


def token_of_word(lm: LM, word: str, spaced: bool) -> int:
    """The explained model's first token of ``word`` (with its leading space when ``spaced``)."""
    return int(lm.tokenizer((" " if spaced else "") + word, add_special_tokens=False)["input_ids"][0])


@functools.lru_cache(maxsize=8)
def _alnum_of(words: tuple[str, ...]) -> torch.Tensor:
    """``[vocab]`` whether each vocabulary word starts with a letter or digit (cached with the vocabulary)."""
    return torch.tensor([x[:1].isalnum() for x in words], dtype=torch.bool)


def mlm_candidates(mlm: LM, w: Words, ranked: list[int], k: int, same_kind: bool) -> dict[int, list[str]]:
    """The masked model's ``k`` likeliest whole words for each ranked word, masked alone (one batched pass).

    Each row is the prompt with one word replaced by the mask token, tokenized by the masked
    model itself, so its vocabulary need not match the explained model's.
    """
    tok = mlm.tokenizer
    mask = tok.mask_token
    texts = ["".join(s + (mask if j == i else x) for j, (s, x) in enumerate(zip(w.spaces, w.words))) + w.tail
             for i in ranked]
    words, good = word_like(tok, mlm.vocab_size, False)
    kind = _alnum_of(tuple(words))
    out: dict[int, list[str]] = {}
    with torch.no_grad():
        o = mlm.forward(texts)
    if o.logits is None:
        raise OptionError(f"mlm={mlm.name!r} has no masked-language-model head (it returns no logits, like a "
                          "sentence-embedding encoder): give an encoder with one, e.g. a BERT folder.")
    ids = o.batch.input_ids
    for row, i in enumerate(ranked):
        where = (ids[row] == tok.mask_token_id).nonzero()
        if len(where) != 1:
            continue  # the mask was cut or merged by the tokenizer: this word gets no fill-ins
        allowed = good
        if same_kind:
            allowed = allowed & (kind if w.words[i][:1].isalnum() else ~kind)
        out[i] = _top_words(o.logits[row, int(where[0, 0])].float(), allowed, words, {w.words[i].lower()}, k)
    return out


def _top_words(score: torch.Tensor, allowed: torch.Tensor, words: list[str], exclude: set[str], k: int,
               token_of: dict | None = None, at: int = -1) -> list[str]:
    """The ``k`` allowed tokens of highest ``score`` ``[vocab]``, as distinct words (not in ``exclude``);
    each word's token is recorded in ``token_of[(at, word)]`` when given."""
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
            if token_of is not None:
                token_of.setdefault((at, word), v)
            if len(out) == k:
                break
    return out
