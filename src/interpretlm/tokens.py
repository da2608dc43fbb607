"""Tokenization with character offsets, special-token marks and the BOS/EOS policy.

Everything a method needs to know about its inputs lives in a :class:`Batch`: ids
``[batch, pos]`` (right-padded, so positions are the same as for the unpadded prompt),
which positions are real, which are special tokens, which lie inside the user's own
prompt (not the chat template around it), and each token's character span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

import torch

from .errors import ContextLengthError, EmptyInputError, TokenIdError

Prompt = Union[str, Sequence[int], torch.Tensor]
Prompts = Union[Prompt, Sequence[str], Sequence[Sequence[int]]]


@dataclass
class Batch:
    """A tokenized batch.

    Attributes:
        input_ids: ``[batch, pos]`` token ids, right-padded with the pad token.
        attention_mask: ``[batch, pos]`` 1 for real tokens, 0 for padding.
        special: ``[batch, pos]`` True where a token is a special token (BOS, EOS, chat
            markers, [CLS]/[SEP]); methods leave them out of attributions by default.
        in_prompt: ``[batch, pos]`` True where a token lies inside the user's prompt
            (False for padding, special tokens and chat-template scaffolding).
        texts: the text each row was tokenized from (the formatted chat text when
            ``chat=True``); ``None`` for rows given as token ids.
        prompts: the user's prompts as given (``None`` for token ids).
        offsets: per row, per real token, its ``(start, end)`` span in ``texts[row]``.
        tokens: per row, the display string of each real token.
        policy: how special tokens were added (``add_special_tokens``, ``bos_added``,
            ``eos_added``, ``chat``) — recorded in every result.
        extra: free slots for targets, e.g. the positions of a continuation.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    special: torch.Tensor
    in_prompt: torch.Tensor
    texts: list[str | None]
    prompts: list[str | None]
    offsets: list[list[tuple[int, int]]]
    tokens: list[list[str]]
    policy: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of rows."""
        return int(self.input_ids.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """``[batch]`` number of real tokens per row."""
        return self.attention_mask.sum(dim=1)

    @property
    def last_index(self) -> torch.Tensor:
        """``[batch]`` position of the last real token of each row (-1 for an empty row).

        Not ``lengths - 1``: a row whose mask has holes (a token dropped by attention masking)
        still ends at its last real token.
        """
        real = self.attention_mask.bool()
        if real.shape[1] == 0:
            return self.lengths - 1
        pos = torch.arange(real.shape[1], device=real.device).expand_as(real)
        return torch.where(real, pos, torch.full_like(pos, -1)).amax(dim=1)

    def to(self, device: torch.device | str) -> "Batch":
        return replace(self, input_ids=self.input_ids.to(device),
                       attention_mask=self.attention_mask.to(device))

    def rows(self, start: int, stop: int) -> "Batch":
        """Rows ``start:stop`` as a batch (tensors in ``extra`` with a batch axis are sliced too)."""
        sl = slice(start, stop)
        extra = {k: (v[sl] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == self.size else v)
                 for k, v in self.extra.items()}
        return Batch(self.input_ids[sl], self.attention_mask[sl], self.special[sl], self.in_prompt[sl],
                     self.texts[sl], self.prompts[sl], self.offsets[sl], self.tokens[sl], dict(self.policy), extra)

    def row(self, i: int) -> "Batch":
        """The ``i``-th row as a batch of one, padding removed."""
        n = int(self.lengths[i])
        return Batch(self.input_ids[i:i + 1, :n], self.attention_mask[i:i + 1, :n],
                     self.special[i:i + 1, :n], self.in_prompt[i:i + 1, :n],
                     [self.texts[i]], [self.prompts[i]], [self.offsets[i]], [self.tokens[i]],
                     dict(self.policy), {k: v for k, v in self.extra.items()})


def _is_token_ids(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8)
    return isinstance(x, Sequence) and not isinstance(x, str) and len(x) > 0 and all(
        isinstance(t, int) for t in x)


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens, including added tokens flagged special (chat markers)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids |= {int(i) for i, t in added.items() if getattr(t, "special", False)}
    return ids


def normalize_inputs(inputs: Prompts) -> list[str | list[int]]:
    """Turn a prompt, a list of prompts, token ids or a list of token ids into a list of rows."""
    if isinstance(inputs, str):
        rows: list[Any] = [inputs]
    elif isinstance(inputs, torch.Tensor):
        if inputs.dim() == 1:
            rows = [inputs.tolist()]
        elif inputs.dim() == 2:
            rows = inputs.tolist()
        else:
            raise EmptyInputError(f"Token ids must be [pos] or [batch, pos]; got shape {tuple(inputs.shape)}.")
    elif _is_token_ids(inputs):
        rows = [list(inputs)]  # type: ignore[arg-type]
    elif isinstance(inputs, Sequence):
        rows = [r.tolist() if isinstance(r, torch.Tensor) else r for r in inputs]
    else:
        raise EmptyInputError(f"Expected a prompt string, a list of prompts or token ids; got {type(inputs).__name__}.")
    if not rows:
        raise EmptyInputError("No prompts were given: pass a non-empty string or a non-empty list of prompts.")
    for i, r in enumerate(rows):
        if isinstance(r, str):
            if not r.strip():
                raise EmptyInputError(f"Prompt {i} is empty: give some text to explain.")
        elif _is_token_ids(r):
            rows[i] = list(r)
        else:
            raise EmptyInputError(f"Prompt {i} is neither text nor a non-empty list of token ids: {r!r:.80}")
    return rows


def tokenize(tokenizer: Any, inputs: Prompts, *, n_ctx: int | None, chat: bool = False,
             add_special_tokens: bool = True, system_prompt: str | None = None,
             vocab_size: int | None = None) -> Batch:
    """Tokenize prompts (or take token ids) into a right-padded :class:`Batch`.

    Args:
        tokenizer: a Hugging Face fast tokenizer.
        inputs: a prompt, a list of prompts, token ids ``[pos]`` / ``[batch, pos]`` or a
            list of token-id lists.
        n_ctx: the model's context length; longer rows raise :class:`ContextLengthError`.
        chat: format each text prompt as a user message with the tokenizer's chat
            template (generation prompt added), as instruct models are used.
        add_special_tokens: follow the tokenizer's own BOS/EOS policy (default). Ignored
            with ``chat=True``, where the template places the special tokens.
        system_prompt: optional system message for ``chat=True``.

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> b = tokenize(AutoTokenizer.from_pretrained("gpt2"), "Hello world", n_ctx=1024)  # doctest: +SKIP
        >>> b.input_ids.shape, b.tokens[0]  # doctest: +SKIP
        (torch.Size([1, 2]), ['Hello', ' world'])
    """
    rows = normalize_inputs(inputs)
    special_ids = special_token_ids(tokenizer)
    ids_list: list[list[int]] = []
    texts: list[str | None] = []
    prompts: list[str | None] = []
    offsets: list[list[tuple[int, int]]] = []
    in_prompt_rows: list[list[bool]] = []
    bos_added = eos_added = False
    for row in rows:
        if isinstance(row, str):
            text, start = row, 0
            use_special = add_special_tokens
            if chat:
                if not getattr(tokenizer, "chat_template", None):
                    raise EmptyInputError(
                        "chat=True needs a tokenizer with a chat template; this model has none. "
                        "Pass chat=False and format the prompt yourself.")
                messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
                messages.append({"role": "user", "content": row})
                text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                start = text.rfind(row)
                use_special = False
            enc = tokenizer(text, add_special_tokens=use_special, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            offs = [tuple(o) for o in enc["offset_mapping"]]
            end = start + len(row)
            # A token belongs to the prompt when its span overlaps the prompt's characters
            # (chat templates add scaffolding around it).
            inp = [(i not in special_ids) and e > s and e > start and s < end for i, (s, e) in zip(ids, offs)]
            if use_special and ids:
                bos_added |= ids[0] == tokenizer.bos_token_id or ids[0] == getattr(tokenizer, "cls_token_id", None)
                eos_added |= ids[-1] == tokenizer.eos_token_id or ids[-1] == getattr(tokenizer, "sep_token_id", None)
            texts.append(text)
            prompts.append(row)
        else:
            ids = [int(t) for t in row]
            n_vocab = vocab_size or len(tokenizer)
            bad = [t for t in ids if not 0 <= t < n_vocab]
            if bad:
                raise TokenIdError(f"Token id {bad[0]} is outside the vocabulary (0..{n_vocab - 1}); token ids come "
                                   "from lm.tokenize(...).input_ids or the tokenizer.")
            offs, decoded = id_spans(tokenizer, ids)
            inp = [t not in special_ids for t in ids]
            texts.append(decoded)
            prompts.append(None)
        if n_ctx is not None and len(ids) > n_ctx:
            raise ContextLengthError(
                f"A prompt is {len(ids)} tokens long but the model's context window is {n_ctx} tokens. "
                "Shorten the prompt (or split it) so that it fits.")
        if not ids:
            raise EmptyInputError("A prompt produced no tokens; give some text to explain.")
        ids_list.append(ids)
        offsets.append([(int(s), int(e)) for s, e in offs])
        in_prompt_rows.append(inp)

    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    width = max(len(r) for r in ids_list)
    n = len(ids_list)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    special = torch.zeros((n, width), dtype=torch.bool)
    in_prompt = torch.zeros((n, width), dtype=torch.bool)
    tokens: list[list[str]] = []
    for i, (ids, offs, inp, text) in enumerate(zip(ids_list, offsets, in_prompt_rows, texts)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        special[i, : len(ids)] = torch.tensor([t in special_ids for t in ids])
        in_prompt[i, : len(ids)] = torch.tensor(inp, dtype=torch.bool)
        tokens.append(span_labels(tokenizer, ids, offs, text, special_ids))
    policy = {"add_special_tokens": bool(add_special_tokens and not chat), "chat": bool(chat),
              "bos_added": bool(bos_added), "eos_added": bool(eos_added),
              "padding_side": "right"}
    return Batch(input_ids, mask, special, in_prompt, texts, prompts, offsets, tokens, policy)


def span_labels(tokenizer: Any, ids: Sequence[int], offsets: Sequence[tuple[int, int]], text: str | None,
                special_ids: set[int]) -> list[str]:
    """The display string of each token, cut from ``text`` by its character offsets.

    Labels are disjoint: when several tokens share a character (byte-fallback pieces of an
    emoji, a Hebrew or Chinese character split across byte tokens), the first shows it and
    the others show ``""``, so the labels of a row join back into its text exactly, in any
    script. Special tokens (and tokens with no characters) show the tokenizer's piece.

    Example:
        >>> from interpretlm.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> enc = tok("I ❤", return_offsets_mapping=True)
        >>> span_labels(tok, enc["input_ids"], enc["offset_mapping"], "I ❤", set())
        ['I', ' ', '❤', '', '']
    """
    labels, done = [], 0
    for t, (s, e) in zip(ids, offsets):
        if e > s and text is not None and t not in special_ids:
            start = max(s, done)
            labels.append(text[start:e] if e > start else "")
            done = max(done, e)
        else:
            labels.append(tokenizer.convert_ids_to_tokens(int(t)))
    return labels


def id_spans(tokenizer: Any, ids: Sequence[int]) -> tuple[list[tuple[int, int]], str]:
    """Character spans of token ids in their decoded text (``(spans, text)``), for inputs given as ids.

    Byte pieces that only decode together (one character split over several byte tokens)
    share that character's span, as a fast tokenizer's offsets do, so :func:`span_labels`
    shows the character once.

    Example:
        >>> from interpretlm.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> id_spans(tok, tok("a❤", add_special_tokens=False)["input_ids"])
        ([(0, 1), (1, 2), (1, 2), (1, 2)], 'a❤')
    """
    spans: list[tuple[int, int]] = []
    text, i = "", 0
    while i < len(ids):
        j, piece = i + 1, tokenizer.decode([ids[i]])
        if "\ufffd" in piece:  # part of a character: a UTF-8 character is at most 4 byte pieces
            for k in range(i + 2, min(i + 4, len(ids)) + 1):
                joined = tokenizer.decode(list(ids[i:k]))
                if "\ufffd" not in joined:
                    j, piece = k, joined
                    break
        spans += [(len(text), len(text) + len(piece))] * (j - i)
        text += piece
        i = j
    return spans, text


def append_tokens(batch: Batch, new_ids: Sequence[int], tokenizer: Any, n_ctx: int | None) -> tuple[Batch, torch.Tensor]:
    """Append the same token ids after the last real token of every row.

    Returns the new batch and ``[batch, len(new_ids)]`` positions of the appended tokens.
    Used by targets that teacher-force a continuation.
    """
    k = len(new_ids)
    lengths = batch.lengths
    width = int(lengths.max()) + k
    if n_ctx is not None and width > n_ctx:
        raise ContextLengthError(
            f"Prompt plus continuation is {width} tokens; the model's context window is {n_ctx}.")
    n = batch.size
    pad = batch.input_ids[0, -1].item() if batch.input_ids.shape[1] else 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else pad
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    special = torch.zeros((n, width), dtype=torch.bool)
    in_prompt = torch.zeros((n, width), dtype=torch.bool)
    positions = torch.zeros((n, k), dtype=torch.long)
    new = torch.tensor(list(new_ids), dtype=torch.long)
    special_ids = special_token_ids(tokenizer)
    new_special = torch.tensor([t in special_ids for t in new_ids], dtype=torch.bool)
    new_spans, new_text = id_spans(tokenizer, list(new_ids))
    pieces = span_labels(tokenizer, list(new_ids), new_spans, new_text, special_ids)
    tokens, offsets, texts = [], [], []
    for i in range(n):
        L = int(lengths[i])
        ids[i, :L] = batch.input_ids[i, :L]
        ids[i, L:L + k] = new
        mask[i, :L + k] = 1
        special[i, :L] = batch.special[i, :L]
        special[i, L:L + k] = new_special
        in_prompt[i, :L] = batch.in_prompt[i, :L]
        positions[i] = torch.arange(L, L + k)
        text = batch.texts[i] or ""
        offs = list(batch.offsets[i])
        offs += [(len(text) + s, len(text) + e) for s, e in new_spans]
        texts.append(text + new_text)
        offsets.append(offs)
        tokens.append(list(batch.tokens[i]) + pieces)
    out = Batch(ids, mask, special, in_prompt, texts, list(batch.prompts), offsets, tokens,
                dict(batch.policy), dict(batch.extra))
    return out, positions
