"""Substitution and insertion candidates for each editable word: the model's own next-token
distribution, HotFlip's embedding gradient, the nearest tokens in the input embedding and, when
the user gives one, a masked language model (step 2 of :mod:`.search`)."""

from __future__ import annotations

import functools
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


def word_candidates(lm: LM, goal: Goal, bound: Target, batch, w: Words, word_tokens: list[list[int]],
                    ranked: list[int], k_sub: int, k_ins: int, kinds: tuple[str, ...], pool: int,
                    fluency: float = 0.0) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Substitutes and insertions per editable word, from one forward and one backward pass on the prompt.

    The distribution source reads the logits predicting the word's first token (position
    ``p - 1`` on causal models, ``p`` on masked ones); HotFlip scores every token ``v`` by
    ``(E[v] - E[x_p]) · ∂g/∂E[x_p]`` and keeps the lowest (the largest first-order drop of ``g``);
    with ``fluency > 0`` it keeps the highest ``-score + 0.1 fluency · log p(v)`` instead (words the
    distribution source already gave excepted) among tokens at most ``5 / fluency`` nats less
    likely than the original token, and every
    source keeps only words of the original's kind (letters/digits or punctuation): a word
    replaced by a stray bracket or quote flips cheaply but reads as noise.
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
    spaced_words, spaced = word_like(lm.tokenizer, lm.vocab_size, True)
    bare_words, bare = word_like(lm.tokenizer, lm.vocab_size, False)
    subs: dict[int, list[str]] = {}
    ins: dict[int, list[str]] = {}
    alnum = _alnum_of(tuple(spaced_words)), _alnum_of(tuple(bare_words))
    unit = torch.nn.functional.normalize(table, dim=-1) if fluency > 0 else None  # [vocab, d_model]
    gdot = table @ grad.T  # [vocab, pos]: E[v] · ∂g/∂E at every position, one product for all words
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
            dist = _top_words(logits[src], allowed, vocab_words, own, k_sub + k_ins)
        grad_score = gdot[:, p] - gdot[ids[0, p], p]  # [vocab] first-order change of g
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
            floor = float(logp[ids[0, p]]) - HOTFLIP_FLOOR / fluency
            fluent = fluent & (logp >= floor).cpu()
            # first-order drops of g are ~1 here while log-probabilities spread over ~10 nats: an
            # unscaled sum would turn HotFlip into the distribution source, so log p counts a tenth
            key = key + HOTFLIP_FLUENCY * fluency * torch.log_softmax(logits[src], -1)
            taken = own | {x.lower() for x in dist[:k_sub]}  # new words, not the distribution's again
        flip = _top_words(key, fluent, vocab_words, taken, k_sub)
        near: list[str] = []
        if unit is not None:
            # the word's nearest tokens in the model's input embedding (cosine): same kind of word, often the
            # same part of speech, and fluent where the distribution source only repeats the context's guess
            near = _top_words(unit @ unit[ids[0, p]], allowed, vocab_words, own | {x.lower() for x in dist[:k_sub]},
                              k_sub)
        if "substitute" in kinds:
            merged = []
            for word in dist[:k_sub] + near + flip:
                if word not in merged:
                    merged.append(word)
            subs[i] = merged
        if "insert" in kinds and k_ins and w.words[i][:1].isalnum():
            ins[i] = dist[:k_ins]  # before a word of letters/digits, so with fluency > 0 words of that kind
    return subs, ins


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
