"""The model calls explanations need: chat prompts (or a plain fallback), greedy generation, and the
log-probabilities of a few answer tokens for many rows that share a long prefix, in batched passes.

Every scorer here reads log-probabilities of a teacher-forced text; nothing is sampled. The rows of
a scorer share their instruction (few-shot turns and the explanation), which runs once: its
key/value cache is copied for each batch of rows, and each row adds only its own tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InterpretLMError, InterpretLMWarning
from ..reasoning.engine import cache_of, model_call, stop_ids

HOLE = "\u2063HOLE\u2063"   # an invisible separator no tokenizer merges with text: where a row's text goes


class ExplanationError(InterpretLMError, ValueError):
    """An explanation request that cannot run (no text, a model that cannot score, bad options)."""


class PromptTooLongError(ExplanationError):
    """A prompt does not fit the model's context window."""


class PlainPromptWarning(InterpretLMWarning):
    """A model without a chat template: its prompt is plain text (``User: ... Assistant:``)."""


class ExplanationFlagWarning(InterpretLMWarning):
    """An explanation could not be made or scored in full (a unit that never fires, no cited words...)."""


def has_chat(lm: Any) -> bool:
    """Whether the model's tokenizer has a chat template."""
    return bool(getattr(lm.tokenizer, "chat_template", None))


def can_generate(lm: Any) -> bool:
    """Whether the model continues text (a causal LM with a head)."""
    return bool(getattr(lm, "is_causal", False) and getattr(lm, "has_head", False))


def chat_text(lm: Any, turns: list[tuple[str, str]], *, system: str | None = None) -> str:
    """The text of a conversation ending with an open assistant turn.

    ``turns``: ``[(role, text), ...]`` with roles ``"user"`` / ``"assistant"``; the last is a user turn.
    Through the tokenizer's chat template when it has one; otherwise ``User: ...\\nAssistant: ...``
    lines (the caller warns with :class:`PlainPromptWarning`).

    Example:
        >>> from types import SimpleNamespace
        >>> chat_text(SimpleNamespace(tokenizer=SimpleNamespace(chat_template=None)), [("user", "Hi?")])
        'User: Hi?\\nAssistant:'
    """
    if has_chat(lm):
        messages = ([{"role": "system", "content": system}] if system else [])
        messages += [{"role": r, "content": t} for r, t in turns]
        return lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [system] if system else []
    lines += [f"{'User' if r == 'user' else 'Assistant'}: {t}" for r, t in turns]
    return "\n".join(lines) + "\nAssistant:"


def encode(lm: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (the chat template already placed them)."""
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


@torch.no_grad()
def generate(lm: Any, text: str, *, max_new_tokens: int = 64) -> tuple[str, int]:
    """The model's greedy continuation of ``text`` (a chat text from :func:`chat_text`), up to its end of turn.

    Returns:
        the generated text and the number of forward calls.
    """
    if not can_generate(lm):
        raise ExplanationError(f"{lm.name} is not a causal language model with a head; it cannot write an "
                               "explanation.")
    ids = encode(lm, text)
    room = (lm.n_ctx or 10**9) - len(ids) - 1
    steps = min(max_new_tokens, room)
    if steps <= 0:
        raise PromptTooLongError(f"The explainer's prompt ({len(ids)} tokens) fills the context window of {lm.n_ctx}; "
                               "show fewer or shorter examples.")
    stops = stop_ids(lm)
    out = model_call(lm, torch.tensor([ids]))
    calls = 1
    new: list[int] = []
    for _ in range(steps):
        nxt = int(out.logits[0, -1].float().argmax())
        if nxt in stops:
            break
        new.append(nxt)
        out = model_call(lm, torch.tensor([[nxt]]), cache_of(out))
        calls += 1
    return lm.tokenizer.decode(new, skip_special_tokens=True).strip(), calls


def answer_ids(lm: Any, words: list[str]) -> list[int]:
    """The first token of each spelling of each word (``"yes"``, ``" yes"``, ``"Yes"``...), deduplicated."""
    out: list[int] = []
    for w in words:
        for variant in (w, " " + w, w.capitalize(), " " + w.capitalize()):
            ids = encode(lm, variant)
            if ids and ids[0] not in out:
                out.append(ids[0])
    return out


@dataclass
class PrefixScorer:
    """Log-probabilities after many rows that share one prefix, in batched passes on the prefix's cache.

    ``prefix``: the shared tokens (run once). :meth:`next_logprobs` takes rows of suffix tokens and
    returns each row's next-token log-probabilities after its last token; :meth:`logprobs_at` returns
    them at chosen positions of each row. ``forward_calls`` counts the batched passes (the prefix's
    included); ``tokens_run`` the tokens they ran.
    """

    lm: Any
    prefix: list[int]
    batch_size: int = 16
    forward_calls: int = 0
    tokens_run: int = 0
    shots: int = 0
    brief: bool = False
    per_prompt: int = 1
    _cache: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not can_generate(self.lm):
            raise ExplanationError(f"{self.lm.name} is not a causal language model with a head; it cannot score "
                                   "explanations from next-token log-probabilities.")
        cfg = self.lm.model.config
        # a sliding-window cache keeps only the window (Gemma 3): rows then run as full passes
        self.full = bool(getattr(cfg, "sliding_window", None)) and "sliding_attention" in (
            getattr(cfg, "layer_types", None) or ["sliding_attention"])

    def _prefix_cache(self) -> Any:
        if self._cache is None:
            self._cache = cache_of(model_call(self.lm, torch.tensor([self.prefix])))
            self.forward_calls += 1
            self.tokens_run += len(self.prefix)
        return self._cache

    @torch.no_grad()
    def logprobs_at(self, rows: list[list[int]], at: list[list[int]]) -> list[torch.Tensor]:
        """Per row, ``[len(at[i]), vocab]`` log-probabilities of the token after each position ``at[i][j]``
        (positions index the row's own tokens)."""
        n_ctx = self.lm.n_ctx or 10**9
        for r in rows:
            if not r:
                raise ExplanationError("A scored row is empty.")
            if len(self.prefix) + len(r) > n_ctx:
                raise PromptTooLongError(f"A scored row ({len(self.prefix) + len(r)} tokens with its prompt) exceeds "
                                       f"the context window of {n_ctx}; use shorter windows.")
        out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
        P = len(self.prefix)
        for s in range(0, len(rows), self.batch_size):
            chunk = rows[s:s + self.batch_size]
            width = max(len(r) for r in chunk)
            if self.full:
                ids = torch.zeros(len(chunk), P + width, dtype=torch.long)
                mask = torch.zeros(len(chunk), P + width, dtype=torch.long)
                for b, r in enumerate(chunk):
                    ids[b, :P + len(r)] = torch.tensor(self.prefix + r)
                    mask[b, :P + len(r)] = 1
                logits = model_call(self.lm, ids, mask=mask).logits[:, P:]
                self.tokens_run += int(mask.sum())
            else:
                ids = torch.zeros(len(chunk), width, dtype=torch.long)
                mask = torch.zeros(len(chunk), P + width, dtype=torch.long)
                mask[:, :P] = 1
                for b, r in enumerate(chunk):
                    ids[b, :len(r)] = torch.tensor(r)
                    mask[b, P:P + len(r)] = 1
                pos = (P + torch.arange(width)).expand(len(chunk), width)
                cache = copy.deepcopy(self._prefix_cache())
                cache.batch_repeat_interleave(len(chunk))
                logits = model_call(self.lm, ids, cache, mask, pos).logits
                self.tokens_run += sum(len(r) for r in chunk)
            self.forward_calls += 1
            for b in range(len(chunk)):
                idx = torch.tensor(at[s + b], dtype=torch.long)
                out[s + b] = torch.log_softmax(logits[b, idx].float(), -1).cpu()
        return out

    def next_logprobs(self, rows: list[list[int]]) -> torch.Tensor:
        """``[rows, vocab]`` each row's next-token log-probabilities after its last token."""
        got = self.logprobs_at(rows, [[len(r) - 1] for r in rows])
        return torch.stack([g[0] for g in got]) if got else torch.zeros(0)

    @torch.no_grad()
    def read_lists(self, rows: list[list[int]], n_items: list[int], yes: list[int], no: list[int],
                   sep: list[int]) -> list[list[float]]:
        """Greedy answers ``[y, n, ...]`` read item by item: per row, ``n_items[i]`` log-odds of ``yes``
        against ``no`` (log-sum-exp over each list of token ids).

        Each row ends where the first item of its answer list goes (after ``[``). At every step the
        likelier of the two answers is fed back, followed by ``sep`` (the tokens of ``", "``), so item
        ``j`` is read after the model's own answers to items ``0..j-1``, as a greedy decoder would
        write the list; nothing is sampled. The first step runs the rows on the prefix's cache (one
        batched pass per ``batch_size`` rows), each later step feeds ``1 + len(sep)`` tokens per row.
        """
        n_ctx = self.lm.n_ctx or 10**9
        out: list[list[float]] = [[] for _ in rows]
        P = len(self.prefix)
        yes_t, no_t = torch.tensor(yes), torch.tensor(no)
        for s in range(0, len(rows), self.batch_size):
            chunk, items = rows[s:s + self.batch_size], n_items[s:s + self.batch_size]
            steps = max(items)
            width = max(len(r) for r in chunk)
            if P + width + steps * (1 + len(sep)) > n_ctx:
                raise PromptTooLongError(f"A scored prompt ({P + width} tokens and its answer) exceeds the context "
                                         f"window of {n_ctx}; show fewer or shorter examples per prompt.")
            B = len(chunk)
            ids = torch.zeros(B, width, dtype=torch.long)
            mask = torch.zeros(B, P + width, dtype=torch.long)
            mask[:, :P] = 1
            for b, r in enumerate(chunk):
                ids[b, :len(r)] = torch.tensor(r)
                mask[b, P:P + len(r)] = 1
            ends = torch.tensor([P + len(r) for r in chunk])       # the next position of each row
            if self.full:   # no reusable cache: the prefix runs with the rows
                ids = torch.cat([torch.tensor([self.prefix]).expand(B, P), ids], 1)
                res = model_call(self.lm, ids, None, mask)
                self.tokens_run += int(mask.sum())
                last = ends - 1
            else:
                cache = copy.deepcopy(self._prefix_cache())
                cache.batch_repeat_interleave(B)
                res = model_call(self.lm, ids, cache, mask, (P + torch.arange(width)).expand(B, width))
                self.tokens_run += sum(len(r) for r in chunk)
                last = ends - 1 - P
            self.forward_calls += 1
            logits = res.logits[torch.arange(B), last].float()
            cache = cache_of(res)
            for step in range(steps):
                lp = torch.log_softmax(logits, -1).cpu()
                odds = torch.logsumexp(lp[:, yes_t], -1) - torch.logsumexp(lp[:, no_t], -1)
                for b in range(B):
                    if step < items[b]:
                        out[s + b].append(float(odds[b]))
                if step == steps - 1:
                    break
                pick = [yes[int(lp[b, yes_t].argmax())] if odds[b] > 0 else no[int(lp[b, no_t].argmax())]
                        for b in range(B)]
                new = torch.tensor([[p] + sep for p in pick])                       # [B, 1 + len(sep)]
                k = new.shape[1]
                mask = torch.cat([mask, torch.ones(B, k, dtype=torch.long)], 1)
                pos = ends[:, None] + torch.arange(k)
                ends = ends + k
                res = model_call(self.lm, new, cache, mask, pos)
                cache = cache_of(res)
                logits = res.logits[:, -1].float()
                self.forward_calls += 1
                self.tokens_run += B * k
        return out

    @torch.no_grad()
    def full_pass(self, row: list[int]) -> torch.Tensor:
        """``[vocab]`` the same next-token log-probabilities from one plain pass (the check's reference)."""
        logits = model_call(self.lm, torch.tensor([self.prefix + row])).logits[0, -1]
        return torch.log_softmax(logits.float(), -1).cpu()


def split_prompt(lm: Any, text: str) -> tuple[list[int], str]:
    """A chat text holding one :data:`HOLE` as the shared prefix's ids and the text after the hole."""
    if text.count(HOLE) != 1:
        raise ExplanationError("A scorer prompt must hold exactly one place for its row.")
    head, tail = text.split(HOLE)
    return encode(lm, head), tail


__all__ = ["ExplanationError", "PromptTooLongError", "ExplanationFlagWarning", "HOLE", "PlainPromptWarning", "PrefixScorer", "answer_ids",
           "can_generate", "chat_text", "encode", "generate", "has_chat", "split_prompt"]
