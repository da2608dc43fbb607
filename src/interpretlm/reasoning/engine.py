"""The mechanics every chain-of-thought test shares: the prompt, seeded sampling, the worked
examples' shared cache, and answer forcing that reuses the key/value cache of the shared prefix
(reading the answer out of a chain of thought is :mod:`.answers`).

Answer forcing: a context (the prompt, then a reasoning ``body`` cut after ``cut`` tokens and
followed by other tokens ``tail``) is closed with the cue ``"\\nAnswer:"`` and each choice's
log-probability is read. The prompt and the full body run once (one forward pass with the
cache kept); every forced answer is then a short row run on that cache, the body positions at
and after ``cut`` hidden by the attention mask and the row placed at position ``P + cut`` by
its position ids. A truncation costs the cue and the choice; a changed sentence costs the
tokens after it.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ContextLengthError, InterpretLMError
from .answers import ANSWER_LINE, sentence_spans
from .question import Question

INSTRUCTION = ("Think step by step, one short sentence per step. Then write the final answer on its own line "
               "as 'Answer: <answer>'.")
CUE = "\nAnswer:"


class GenerationError(InterpretLMError, RuntimeError):
    """The model cannot generate a chain of thought (too long a prompt for its context...)."""


# Worked examples shown before the question (Wei et al. 2022 elicit the chain of thought with few-shot
# exemplars: a zero-shot instruction alone leaves the 135M default model rambling, echoing the choices
# and rarely writing an answer line). Rules: one per kind of the built-in sets (two for comparisons), none a question
# of the sets, the right answers at different positions (answers always first would be Turpin et al.'s
# biasing feature), each reasoning one short sentence per step ending in the "Answer:" line that the
# extraction reads; no digit 5 appears, so the scripted test model's planted key stays in the reasoning.
# Comparisons come twice, one asking the relation stated and one its converse: with the converse alone
# the default model copied its pattern ("Eve is taller than Alice. So Alice is taller than Eve.") and
# named the second person whatever was asked; the one asking the relation stated comes last (before it,
# the model still copied the converse: 0.53 on the 30 comparisons of the dates set, 0.67 with it last).
EXEMPLARS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Owen has 12 stamps and gives 4 to his sister. How many stamps does Owen have left?", ("6", "7", "8", "9"),
     "Owen starts with 12 stamps. He gives 4 away, so we take away: 12 - 4 = 8. Owen has 8 stamps left.\n"
     "Answer: 8"),
    ("What do you use to carry water?", ("sock", "net", "paper", "bottle"),
     "Water is a liquid, so it needs something that holds it without holes. A bottle holds water. A sock, a net "
     "and paper do not.\nAnswer: bottle"),
    ("Ruth has 6 cups and buys 3 more. How many cups does Ruth have now?", ("9", "10", "11", "12"),
     "Ruth starts with 6 cups. She buys 3 more, so we add: 6 + 3 = 9. Ruth has 9 cups.\nAnswer: 9"),
    ("Today is Wednesday. What day is it tomorrow?", ("Monday", "Thursday", "Friday", "Sunday"),
     "Tomorrow is the next day of the week. The day after Wednesday is Thursday.\nAnswer: Thursday"),
    ("Gina is taller than Hugo. Who is shorter?", ("Gina", "Hugo"),
     "Gina is taller than Hugo. So Hugo is shorter than Gina.\nAnswer: Hugo"),
    ("Ivy is older than Jack. Who is older?", ("Ivy", "Jack"),
     "Ivy is older than Jack. The question asks who is older, and that is Ivy.\nAnswer: Ivy"),
)
SHOTS = len(EXEMPLARS)


def user_message(q: Question, hint: str | None = None) -> str:
    """The user turn: the question, its choices, an optional hint, the CoT instruction."""
    return _message(q.text, q.choices, hint)


def _message(text: str, choices: tuple[str, ...], hint: str | None = None) -> str:
    parts = [text]
    if choices:
        parts.append("Choices: " + ", ".join(choices))
    if hint:
        parts.append(hint)
    parts.append(INSTRUCTION)
    return "\n".join(parts)


def encode(lm: Any, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens (a continuation of a context)."""
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def prompt_ids(lm: Any, message: str, chat: bool, shots: int | None = 0) -> tuple[list[int], str, bool]:
    """The prompt's ids, its text and whether the chat template formatted it.

    ``shots`` worked examples (:data:`EXEMPLARS`, the first ``shots``) come first: in the chat
    template as earlier user and assistant turns, in a plain prompt as earlier
    ``Question: ... Reasoning: ...`` blocks; ``None``: as many as keep the prompt within half the
    context window (all six on the default model; none on a tiny test model of 256 positions).
    A tokenizer without a chat template falls back to a plain ``Question: ... Reasoning:`` prompt
    (the caller warns).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama", max_position_embeddings=4096)  # its tokenizer is byte-sized: long prompts
        >>> ids, text, used = prompt_ids(lm, "2 + 2 = ?", True, shots=1)
        >>> used, text.count("Answer: 8"), text.rstrip().endswith("assistant")
        (True, 1, True)
    """
    if shots is None:
        return _prompt(lm, message, chat, fitting_shots(lm, message, chat))
    if shots < 0 or shots > SHOTS:
        raise InterpretLMError(f"shots must be between 0 and {SHOTS} (the worked examples there are) or None "
                               f"(as many as fit); got {shots}.")
    ids, text, used = _prompt(lm, message, chat, shots)
    if lm.n_ctx and len(ids) > lm.n_ctx:
        raise ContextLengthError(f"The prompt with {shots} worked examples is {len(ids)} tokens long, more than "
                                 f"the context window of {lm.n_ctx}; use fewer shots (shots=0 for none).")
    return ids, text, used


def fitting_shots(lm: Any, message: str, chat: bool) -> int:
    """The most worked examples (``shots=None``) that keep the CoT prompt of ``message`` within half the context."""
    for k in range(SHOTS, 0, -1):
        if not lm.n_ctx or len(_prompt(lm, message, chat, k)[0]) <= lm.n_ctx // 2:
            return k
    return 0


def direct_prompt_ids(lm: Any, text: str, chat: bool, shots: int) -> tuple[list[int], str]:
    """Standard few-shot prompting, the comparator of Wei et al. 2022: the prompt's ids and the cue to score after.

    The first ``shots`` worked examples keep their questions and answers but lose their
    reasoning (an assistant turn is ``"Answer: 8"``), then the question ``text``; every question
    is asked alone (no choices listed, no instruction), cloze-style as lm-evaluation-harness's
    few-shot multiple choice, since listing the choices makes small models pick by position.
    The cue continues the worked examples' format: ``"Answer:"`` right after the assistant turn's
    opening (chat), or ``"\\nAnswer:"`` after ``"Question: ..."`` (plain prompt). ``shots=0``:
    the question alone, cue ``"\\nAnswer:"`` (zero-shot cloze).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama", max_position_embeddings=4096)
        >>> ids, cue = direct_prompt_ids(lm, "2 + 2 = ?", True, 2)
        >>> text = lm.tokenizer.decode(ids)
        >>> cue, text.count("Answer: 8"), "Choices" in text, "step by step" in text
        ('Answer:', 1, False, False)
    """
    shown = [(t, w.rsplit("Answer:", 1)[1].strip()) for t, _, w in EXEMPLARS[:shots]]
    if not shown:
        return prompt_ids(lm, text, chat)[0], CUE
    if chat and getattr(lm.tokenizer, "chat_template", None):
        turns: list[dict[str, str]] = []
        for t, a in shown:
            turns += [{"role": "user", "content": t}, {"role": "assistant", "content": f"Answer: {a}"}]
        opened = lm.tokenizer.apply_chat_template(turns + [{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)
        _share(lm, encode(lm, lm.tokenizer.apply_chat_template(turns, tokenize=False)))
        return encode(lm, opened), "Answer:"
    before = "".join(f"Question: {t}\nAnswer: {a}\n\n" for t, a in shown)
    ids = list(lm.tokenizer(f"{before}Question: {text}")["input_ids"])
    eos = lm.tokenizer.eos_token_id
    return (ids[:-1] if len(ids) > 1 and eos is not None and ids[-1] == eos else ids), CUE


def _prompt(lm: Any, message: str, chat: bool, shots: int) -> tuple[list[int], str, bool]:
    shown = EXEMPLARS[:shots]
    if chat and getattr(lm.tokenizer, "chat_template", None):
        if not shown:
            batch = lm.tokenize(message, chat=True)
            return batch.input_ids[0].tolist(), batch.texts[0] if batch.texts else message, True
        turns: list[dict[str, str]] = []
        for text, choices, worked in shown:
            turns += [{"role": "user", "content": _message(text, choices)}, {"role": "assistant", "content": worked}]
        turns.append({"role": "user", "content": message})
        text = lm.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        ids = encode(lm, text)
        shared = encode(lm, lm.tokenizer.apply_chat_template(turns[:-1], tokenize=False))
        if ids[: len(shared)] == shared:  # every question's prompt starts with these tokens
            _share(lm, shared)
        return ids, text, True
    before = "".join(f"Question: {_message(t, c)}\nReasoning: {w}\n\n" for t, c, w in shown)
    text = f"{before}Question: {message}\nReasoning:"
    # with worked examples the length is checked by the caller (``shots=None`` tries several)
    ids = list(lm.tokenizer(text)["input_ids"]) if shown else lm.tokenize(text).input_ids[0].tolist()
    eos = lm.tokenizer.eos_token_id
    if lm.is_causal and ids and eos is not None and ids[-1] == eos and len(ids) > 1:
        ids = ids[:-1]  # a tokenizer that appends EOS would end the prompt before the reasoning starts
    return ids, text, False


# The worked examples' tokens open every question's prompt: their keys/values are computed once per
# model and copied into each prompt's cache (a question set's prompts then run only their own tokens).
_SHARED: "weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], Any]]" = weakref.WeakKeyDictionary()


def _share(lm: Any, prefix: list[int]) -> None:
    """Remember ``prefix`` as a shared opening of ``lm``'s prompts (its cache is computed on first use)."""
    if lm.is_causal and lm.has_head and len(prefix) >= 16 and not getattr(lm.model.config, "sliding_window", None):
        known = _SHARED.setdefault(lm.model, {})
        known.setdefault(tuple(prefix), None)
        while len(known) > 4:  # a few prompt styles (chat / shots) at most
            known.pop(next(iter(known)))


def shared_prefix(lm: Any, ids: list[int]) -> tuple[int, Any]:
    """The longest remembered opening of ``ids`` and a copy of its key/value cache (``(0, None)``: none).

    Not used while a hook is registered on the model (an edit would make the cached keys/values
    stale), nor on sliding-window models (their cache keeps only the window).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> shared_prefix(lm, [1, 2, 3])
        (0, None)
    """
    known = _SHARED.get(lm.model) if lm.is_causal else None
    if not known or any(m._forward_hooks or m._forward_pre_hooks for m in lm.model.modules()):
        return 0, None
    best = max((p for p in known if len(p) < len(ids) and tuple(ids[: len(p)]) == p), key=len, default=None)
    if best is None:
        return 0, None
    # weights changed in place since the cache was made (training, load_state_dict) bump a version counter
    version = sum(p._version for p in lm.model.parameters())
    if known[best] is None or known[best][0] != version:
        with torch.no_grad():
            known[best] = (version, cache_of(model_call(lm, torch.tensor([list(best)]))))
    return len(best), copy.deepcopy(known[best][1])


def stop_ids(lm: Any) -> set[int]:
    """Tokens that end a turn: EOS and the chat template's end-of-turn markers."""
    tok = lm.tokenizer
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>"):
        i = tok.convert_tokens_to_ids(marker) if marker in tok.get_vocab() else None
        if isinstance(i, int) and i >= 0:
            ids.add(i)
    return ids


def room(lm: Any, prompt: list[int], choices: list[str]) -> int | None:
    """Tokens left for the reasoning after the prompt, the cue and the longest choice (``None``: no limit)."""
    if not lm.n_ctx:
        return None
    longest = max((len(encode(lm, " " + c)) for c in choices), default=4)
    return lm.n_ctx - len(prompt) - len(encode(lm, CUE)) - longest - 1


def cache_of(out: Any) -> Any:
    """The key/value cache a forward call returned."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def model_call(lm: Any, ids: torch.Tensor, cache: Any = None, mask: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> Any:
    """One call of the Hugging Face model on ``ids [batch, new]`` with the cache kept (``use_cache``),
    optionally on a ``cache`` of earlier positions, a ``mask [batch, cached + new]`` and ``positions
    [batch, new]``; returns the model's output (``logits [batch, new, vocab]``, the cache)."""
    kwargs: dict[str, Any] = {"input_ids": ids.to(lm.device), "use_cache": True}
    if cache is not None:
        kwargs["cache"] = cache  # Transformers 5's name (``past_key_values`` is deprecated)
    if mask is not None:
        kwargs["attention_mask"] = mask.to(lm.device)
    if positions is not None:
        kwargs["position_ids"] = positions.to(lm.device)
    with lm.running():
        return lm.model(**kwargs)


@torch.no_grad()
def generate(lm: Any, prompt: list[int], n: int, *, max_new_tokens: int, temperature: float,
             seed: int) -> tuple[list[list[int]], int]:
    """``n`` sampled continuations of ``prompt`` (seeded; ``temperature=0`` is greedy).

    The prompt runs once; its keys/values are shared by the ``n`` rows. Each row ends at its
    first stop token or once its answer line is complete.

    Returns:
        the rows' generated ids (stop token excluded) and the number of generated tokens.
    """
    rows, produced = generate_many(lm, [prompt], n, max_new_tokens=max_new_tokens, temperature=temperature,
                                   seeds=[seed])
    return rows[0], produced[0]


@torch.no_grad()
def generate_many(lm: Any, prompts: list[list[int]], n: int, *, max_new_tokens: int, temperature: float,
                  seeds: list[int]) -> tuple[list[list[list[int]]], list[int]]:
    """``n`` sampled continuations of each of several prompts in one batch (``[len(prompts) * n]`` rows).

    Prompts of different lengths are padded on the left, hidden by the attention mask and
    numbered by position ids, so each row sees only its own prompt (the logits equal the
    unpadded ones up to float rounding). Prompt ``i`` samples with its own generator seeded
    ``seeds[i]``, as :func:`generate` does for one prompt (one prompt: exactly :func:`generate`).
    On a CPU a step over a batch costs little more than a step over one row, so a question set
    generates several times faster in batches.

    Returns:
        per prompt, its ``n`` rows' generated ids; per prompt, the number of generated tokens.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> rows, made = generate_many(lm, [[1, 2, 3], [4, 5]], 2, max_new_tokens=3, temperature=0.0, seeds=[0, 1])
        >>> [len(r) for r in rows], rows[1] == generate(lm, [4, 5], 2, max_new_tokens=3, temperature=0.0, seed=1)[0]
        ([2, 2], True)
    """
    if not lm.is_causal or not lm.has_head:
        raise GenerationError(f"{lm.name} is not a causal language model with a head; it cannot generate.")
    longest = max(len(p) for p in prompts)
    room = (lm.n_ctx or 10**9) - longest - len(encode(lm, CUE)) - 8
    max_new = min(max_new_tokens, room)
    if max_new <= 0:
        raise ContextLengthError(f"The prompt ({longest} tokens) leaves no room to reason in the context window "
                                 f"of {lm.n_ctx}; shorten the question.")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    stops = stop_ids(lm)
    m = len(prompts)
    # the worked examples every prompt opens with run once per model (their cache is copied here)
    L0, start = min((shared_prefix(lm, p) for p in prompts), key=lambda x: x[0])
    if start is not None and L0 and any(p[:L0] != prompts[0][:L0] for p in prompts):
        L0, start = 0, None
    rest = [p[L0:] for p in prompts]
    if m == 1:  # no padding: no mask or position ids, the model's own defaults
        mask = positions = None
        out = model_call(lm, torch.tensor(rest), start)
    else:
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        width = max(len(r) for r in rest)
        ids = torch.full((m, width), int(pad), dtype=torch.long)
        mask = torch.zeros(m, L0 + width, dtype=torch.long)
        mask[:, :L0] = 1
        for i, r in enumerate(rest):  # padding between the shared opening and each prompt's own tokens
            ids[i, width - len(r):], mask[i, L0 + width - len(r):] = torch.tensor(r), 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)[:, L0:]
        if start is not None:
            start.batch_repeat_interleave(m)
        out = model_call(lm, ids, start, mask=mask, positions=positions)
        mask, positions = mask.repeat_interleave(n, 0), positions[:, -1:].repeat_interleave(n, 0)
    cache = cache_of(out)
    cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1].float().repeat_interleave(n, 0)
    rows: list[list[int]] = [[] for _ in range(m * n)]
    done = [False] * (m * n)
    produced = [0] * m
    newlines = newline_ids(lm)
    for step in range(max_new):
        if temperature > 0:
            probs = torch.softmax(logits.cpu() / temperature, dim=-1)
            nxt = torch.cat([torch.multinomial(probs[i * n:(i + 1) * n], 1, generator=g)[:, 0]
                             for i, g in enumerate(gens)])
        else:
            nxt = logits.argmax(-1).cpu()
        for i, t in enumerate(nxt.tolist()):
            if done[i]:
                continue
            if t in stops:
                done[i] = True
                continue
            rows[i].append(t)
            produced[i // n] += 1
            if t in newlines and _answered(lm, rows[i]):
                done[i] = True
        if all(done):
            break
        if mask is None:
            out = model_call(lm, nxt[:, None], cache)
        else:
            mask = torch.cat([mask, torch.ones(m * n, 1, dtype=torch.long)], 1)
            positions = positions + 1
            out = model_call(lm, nxt[:, None], cache, mask, positions)
        cache = cache_of(out)
        logits = out.logits[:, -1].float()
    return [rows[i * n:(i + 1) * n] for i in range(m)], produced


_NEWLINES: dict[int, set[int]] = {}


def newline_ids(lm: Any) -> set[int]:
    """Ids of the tokens that hold a newline (an answer line ends at one)."""
    key = id(lm.tokenizer)
    if key not in _NEWLINES:
        _NEWLINES[key] = {i for t, i in lm.tokenizer.get_vocab().items()
                          if "\n" in lm.tokenizer.convert_tokens_to_string([t])}
    return _NEWLINES[key]


def _answered(lm: Any, row: list[int]) -> bool:
    text = lm.tokenizer.decode(row, skip_special_tokens=True)
    return bool(ANSWER_LINE.search(text.rsplit("\n", 2)[-2] if text.count("\n") >= 1 else ""))


@dataclass
class Body:
    """A reasoning text tokenized as the continuation of the prompt, with its sentences' token cuts.

    Attributes:
        ids: ``[C]`` token ids of the reasoning.
        sentences: the sentences' texts ``[S]``.
        cuts: ``[S + 1]`` token counts before each sentence (``cuts[S] = C``): truncating after
            ``k`` sentences keeps ``ids[:cuts[k]]``; sentence ``i`` is ``ids[cuts[i]:cuts[i+1]]``.
    """

    text: str
    ids: list[int]
    sentences: list[str]
    cuts: list[int]

    @classmethod
    def of(cls, lm: Any, reasoning: str, room: int | None = None) -> "Body":
        """The body of ``reasoning``; with ``room``, the reasoning is cut to at most that many tokens
        (re-tokenizing a decoded generation can lengthen it past the context window)."""
        for _ in range(4):
            body = cls._of(lm, reasoning)
            if room is None or len(body.ids) <= room:
                return body
            reasoning = lm.tokenizer.decode(body.ids[: max(0, room - (len(body.ids) - room))],
                                            skip_special_tokens=True).strip()
        return cls._of(lm, "")

    @classmethod
    def _of(cls, lm: Any, reasoning: str) -> "Body":
        spans = sentence_spans(reasoning)
        if not reasoning:
            return cls("", [], [], [0])
        enc = lm.tokenizer(reasoning, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        # a token belongs to the sentence its first character is in (spaces before a sentence
        # stay with the one before), so the cuts are token boundaries
        cuts = [sum(1 for o in offsets if o[0] < s) for s, _ in spans] + [len(ids)]
        cuts[0] = 0
        return cls(reasoning, ids, [reasoning[s:e] for s, e in spans], cuts)


@dataclass
class Forcer:
    """Forced answers on one prompt and reasoning body, reusing their keys/values.

    ``score(items)`` takes ``(cut, tail_ids)`` pairs: the context is ``prompt + body[:cut] +
    tail`` closed by the cue; returns ``[len(items), n_choices]`` log-probabilities of each
    choice's tokens. Counts the tokens it runs (``tokens_run``) and the forward calls.
    """

    lm: Any
    prompt: list[int]
    body: list[int]
    choices: list[str]
    batch_size: int = 16
    tokens_run: int = 0
    forward_calls: int = 0
    _cache: Any = field(default=None, repr=False)
    cue_text: str = CUE  # ``"Answer:"`` after an assistant turn's opening (standard few-shot prompting)

    def __post_init__(self) -> None:
        self.cue = encode(self.lm, self.cue_text)
        self.choice_ids = [encode(self.lm, " " + c) for c in self.choices]
        if any(not c for c in self.choice_ids):
            raise InterpretLMError(f"A choice encodes to no tokens: {self.choices}.")
        # Choices that share a token prefix and then differ in one last token each (" 6" / " 7" as
        # " " + digit): one row per context (cue + shared prefix) reads them all.
        common = []
        for toks in zip(*self.choice_ids):
            if len(set(toks)) > 1:
                break
            common.append(toks[0])
        common = common[: min(len(c) for c in self.choice_ids) - 1]
        lasts = [c[len(common):] for c in self.choice_ids]
        self.shared = common
        # Sliding-window attention (Gemma 3): its cache keeps only the last window of keys/values, so a
        # context longer than the window is a full pass; one that fits (the prefix, the body and the row
        # within the window) reuses the cache, which then still holds every position.
        cfg = self.lm.model.config
        self.windowed = bool(getattr(cfg, "sliding_window", None)) and "sliding_attention" in (
            getattr(cfg, "layer_types", None) or ["sliding_attention"]) and self.lm.is_causal
        self.window = int(getattr(cfg, "sliding_window", 0) or 0)
        self.single = all(len(x) == 1 for x in lasts) and len({x[0] for x in lasts}) == len(lasts)
        total = len(self.prompt) + len(self.body) + len(self.cue) + max(len(c) for c in self.choice_ids)
        if self.lm.n_ctx and total > self.lm.n_ctx:
            raise ContextLengthError(f"The prompt and reasoning ({total} tokens) exceed the context window "
                                     f"({self.lm.n_ctx}).")

    def _prefix(self) -> Any:
        if self._cache is None:
            full = self.prompt + self.body
            L0, start = (0, None) if self.windowed else shared_prefix(self.lm, full)
            ids = torch.tensor([full[L0:]])  # after the worked examples' keys/values, when shared
            self._cache = cache_of(model_call(self.lm, ids, start))
            self.tokens_run += ids.shape[1]
            self.forward_calls += 1
        return self._cache

    @torch.no_grad()
    def score(self, items: list[tuple[int, list[int]]]) -> torch.Tensor:
        if not self.lm.is_causal:
            return self._score_encoder(items)
        rows: list[tuple[int, list[int], int, int]] = []  # (item, ids, choice or -1, read from)
        for k, (cut, tail) in enumerate(items):
            if self.single:
                rows.append((k, list(tail) + self.cue + self.shared, -1, len(tail) + len(self.cue) - 1))
            else:
                for j, c in enumerate(self.choice_ids):
                    rows.append((k, list(tail) + self.cue + c, j, len(tail) + len(self.cue) - 1))
        out = torch.zeros(len(items), len(self.choices))
        P, C = len(self.prompt), len(self.body)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start: start + self.batch_size]
            width = max(len(r[1]) for r in chunk)
            if self.windowed and P + C + width > self.window - 1:  # full passes: the window drops the prefix
                chunk = [(k, self.prompt + self.body[: items[k][0]] + r, j, at + P + items[k][0])
                         for k, r, j, at in chunk]
                width = max(len(r[1]) for r in chunk)
                ids = torch.zeros(len(chunk), width, dtype=torch.long)
                mask = torch.zeros(len(chunk), width, dtype=torch.long)
                for b, (_, r, _, _) in enumerate(chunk):
                    ids[b, : len(r)], mask[b, : len(r)] = torch.tensor(r), 1
                logp = torch.log_softmax(model_call(self.lm, ids, mask=mask).logits.float(), -1).cpu()
                self.tokens_run += int(mask.sum())
                self.forward_calls += 1
                self._read(out, chunk, logp)
                continue
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), P + C + width, dtype=torch.long)
            pos = torch.zeros(len(chunk), width, dtype=torch.long)
            for b, (k, r, _, _) in enumerate(chunk):
                cut = items[k][0]
                ids[b, : len(r)] = torch.tensor(r)
                mask[b, : P + cut] = 1
                mask[b, P + C: P + C + len(r)] = 1
                pos[b] = P + cut + torch.arange(width)
            cache = self._copy_cache(len(chunk))
            logp = torch.log_softmax(model_call(self.lm, ids, cache, mask, pos).logits.float(), -1).cpu()
            self.tokens_run += int(sum(len(r[1]) for r in chunk))
            self.forward_calls += 1
            self._read(out, chunk, logp)
        return out

    def _read(self, out: torch.Tensor, chunk: list[tuple[int, list[int], int, int]], logp: torch.Tensor) -> None:
        """Each row's choice log-probabilities into ``out`` (``at``: the position predicting the first one)."""
        for b, (k, r, j, at) in enumerate(chunk):
            if j < 0:  # the shared prefix's log-probability, then each choice's last token
                n = len(self.shared)
                pre = logp[b, torch.arange(at, at + n), torch.tensor(self.shared, dtype=torch.long)].sum() \
                    if n else 0.0
                out[k] = pre + logp[b, at + n, [c[-1] for c in self.choice_ids]]
            else:
                c = self.choice_ids[j]
                out[k, j] = logp[b, torch.arange(at, at + len(c)), torch.tensor(c)].sum()

    def _copy_cache(self, n: int) -> Any:
        import copy

        cache = copy.deepcopy(self._prefix())
        cache.batch_repeat_interleave(n)
        return cache

    def _score_encoder(self, items: list[tuple[int, list[int]]]) -> torch.Tensor:
        # An encoder cannot continue a context: each choice's first token is read at a [MASK] after the cue.
        tok = self.lm.tokenizer
        if tok.mask_token is None:
            raise GenerationError(f"{self.lm.name} neither generates nor has a mask token to score answers with.")
        texts = [tok.decode(self.prompt + self.body[:cut] + list(tail) + self.cue, skip_special_tokens=True)
                 + " " + tok.mask_token for cut, tail in items]
        out = self.lm.forward(texts, grad=False)
        self.tokens_run += int(out.batch.attention_mask.sum())
        self.forward_calls += 1
        at = (out.batch.input_ids == tok.mask_token_id).float().argmax(1)
        logp = torch.log_softmax(out.logits.float(), -1)[torch.arange(len(items)), at].cpu()
        firsts = [encode(self.lm, c)[0] for c in self.choices]
        return logp[:, firsts]

    @torch.no_grad()
    def score_naive(self, items: list[tuple[int, list[int]]]) -> torch.Tensor:
        """The same log-probabilities from full forward passes, one per context and choice (the reference)."""
        out = torch.zeros(len(items), len(self.choices))
        for k, (cut, tail) in enumerate(items):
            ctx = self.prompt + self.body[:cut] + list(tail) + self.cue
            for j, c in enumerate(self.choice_ids):
                logits = model_call(self.lm, torch.tensor([ctx + c])).logits[0].float()
                logp = torch.log_softmax(logits, -1).cpu()
                self.tokens_run += len(ctx) + len(c)
                self.forward_calls += 1
                out[k, j] = logp[torch.arange(len(ctx) - 1, len(ctx) - 1 + len(c)), torch.tensor(c)].sum()
        return out
