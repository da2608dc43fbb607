"""Which input features an attribution explains: tokens, words or user spans.

A feature is a group of token positions of the explained row. Tokens that are special
(BOS, chat markers) or outside the user's prompt are never features: they stay as they
are in every perturbation and along every gradient path. For a ``Continuation`` target
the continuation tokens before the last one are features too (each generated token is
explained by the prompt *and* the tokens generated before it).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InterpretLMError
from ..tokens import Batch

GRANULARITIES = ("token", "word", "span")
_PUNCT = re.compile(r"^\W+$")


class FeatureError(InterpretLMError, ValueError):
    """A granularity or span list that does not fit the prompt."""


@dataclass
class Features:
    """Features of one explained row.

    Attributes:
        labels: display string of each feature.
        positions: for each feature, its token positions (in the prepared batch row).
        granularity: ``"token"``, ``"word"`` or ``"span"``.
    """

    labels: list[str]
    positions: list[list[int]]
    granularity: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def first_position(self) -> list[int]:
        return [min(p) for p in self.positions]


def _joins(ch: str) -> bool:
    """A combining mark or a zero-width joiner: it belongs to the character before it."""
    return bool(ch) and (unicodedata.category(ch).startswith("M") or ch in "\u200d\u200c\ufe0f")


def _starts_word(tok: str, prev: str | None) -> bool:
    if prev is None:
        return True
    if _joins(tok[:1]) or (prev[-1:] == "\u200d"):  # "e" + U+0301, emoji ZWJ sequences stay one word
        return False
    if tok[:1].isspace() or prev[-1:].isspace():
        return True
    # punctuation is a word of its own: "store," -> "store" + ","
    return bool(_PUNCT.match(tok)) != bool(_PUNCT.match(prev)) or bool(_PUNCT.match(tok))


def explained_positions(batch: Batch, n_prompt: int) -> list[int]:
    """Positions that may be features: in the user's prompt and not special, plus the
    continuation tokens (positions ``>= n_prompt``) except the last real token."""
    n = int(batch.lengths[0])
    pos = [i for i in range(min(n, n_prompt)) if bool(batch.in_prompt[0, i]) and not bool(batch.special[0, i])]
    pos += [i for i in range(n_prompt, n - 1) if not bool(batch.special[0, i])]
    return pos


def build_features(batch: Batch, n_prompt: int, granularity: str = "token",
                   spans: Sequence[tuple[int, int] | str] | None = None) -> Features:
    """Group the explained positions of row 0 of ``batch`` into features.

    Args:
        batch: the prepared batch (one row; a continuation already appended).
        n_prompt: number of prompt tokens (the rest is the continuation).
        granularity: ``"token"``; ``"word"`` merges the sub-word tokens of a word (and
            keeps punctuation apart); ``"span"`` uses ``spans``.
        spans: character spans ``(start, end)`` of the prompt text, or substrings of it
            (first occurrence); tokens outside every span stay fixed.

    Example:
        >>> f = build_features(lm.tokenize("Unbelievable, said Mary"), 5, "word")  # doctest: +SKIP
        >>> f.labels  # doctest: +SKIP
        ['Unbelievable', ',', ' said', ' Mary']
    """
    if granularity not in GRANULARITIES:
        raise FeatureError(f"granularity must be one of {GRANULARITIES}; got {granularity!r}.")
    if spans is not None and granularity != "span":
        granularity = "span"
    pos = explained_positions(batch, n_prompt)
    if not pos:
        raise FeatureError("The prompt has no token to attribute to (only special tokens?). Give some text.")
    toks = batch.tokens[0]
    if granularity == "token":
        return Features([toks[p] for p in pos], [[p] for p in pos], "token")
    if granularity == "word":
        groups: list[list[int]] = []
        for p in pos:
            prev = None
            if groups and groups[-1][-1] == p - 1 and p != n_prompt:  # the word so far
                prev = "".join(toks[q] for q in groups[-1])
            # An empty label continues the character its neighbour shows (byte pieces): same word.
            if prev is None or (toks[p] and prev and _starts_word(toks[p], prev)):
                groups.append([p])
            else:
                groups[-1].append(p)
        return Features(["".join(toks[p] for p in g) for g in groups], groups, "word")
    # spans
    if not spans:
        raise FeatureError("granularity='span' needs spans=[(start, end), ...] or spans=['substring', ...].")
    text = batch.texts[0] or ""
    offsets = batch.offsets[0]
    groups, labels = [], []
    for sp in spans:
        if isinstance(sp, str):
            start = text.find(sp)
            if start < 0 or not sp:
                raise FeatureError(f"Span {sp!r} does not occur in the prompt {text!r}.")
            s, e = start, start + len(sp)
        else:
            s, e = int(sp[0]), int(sp[1])
            if not 0 <= s < e <= len(text):
                raise FeatureError(f"Span {sp!r} is outside the prompt (0..{len(text)}).")
        members = [p for p in pos if p < n_prompt and offsets[p][1] > s and offsets[p][0] < e]
        if not members:
            raise FeatureError(f"Span {sp!r} covers no attributable token.")
        if any(m in g for g in groups for m in members):
            raise FeatureError(f"Span {sp!r} overlaps another span; spans must be disjoint.")
        groups.append(members)
        labels.append(text[s:e])
    return Features(labels, groups, "span")
