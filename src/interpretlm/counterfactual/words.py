"""Words of a prompt, edits on them, and the word-level distances the field reports.

A prompt is split into words (runs of letters/digits, or runs of punctuation), each with
the whitespace before it, so that applying no edit gives the prompt back character for
character. An edit is a set of operations on the *original* words, keyed by the word they
touch: ``("del", i)``, ``("sub", i, word)``, ``("ins", i, word)`` (a new word before word
``i``; ``i == len(words)`` appends). Keying operations by original position makes every
subset of an edit an edit too, which the minimality check needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|[^\w\s]+|_+")

Op = tuple  # ("del", i) | ("sub", i, word) | ("ins", i, word)


@dataclass(frozen=True)
class Words:
    """A prompt as words.

    Attributes:
        words: ``[n]`` the words.
        spaces: ``[n]`` the whitespace before each word.
        spans: ``[n]`` each word's ``(start, end)`` characters in ``text``.
        tail: whitespace after the last word.

    Example:
        >>> w = split("Great film, truly.")
        >>> w.words, w.text
        (('Great', 'film', ',', 'truly', '.'), 'Great film, truly.')
    """

    words: tuple[str, ...]
    spaces: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    tail: str

    @property
    def text(self) -> str:
        return "".join(s + w for s, w in zip(self.spaces, self.words)) + self.tail

    def __len__(self) -> int:
        return len(self.words)


def split(text: str) -> Words:
    """Split ``text`` into :class:`Words` (whitespace kept, so ``split(t).text == t``)."""
    words, spaces, spans = [], [], []
    end = 0
    for m in WORD.finditer(text):
        words.append(m.group())
        spaces.append(text[end:m.start()])
        spans.append((m.start(), m.end()))
        end = m.end()
    return Words(tuple(words), tuple(spaces), tuple(spans), text[end:])


def apply(w: Words, ops: Iterable[Op]) -> tuple[str, list[str]]:
    """The text and the word list after ``ops`` (operations on the original words of ``w``).

    A deleted word takes its leading whitespace with it (a deleted first word passes its
    leading whitespace to the next word); an inserted word gets one space before it.

    Example:
        >>> w = split("a very good film")
        >>> apply(w, [("del", 1), ("sub", 2, "bad")])
        ('a bad film', ['a', 'bad', 'film'])
        >>> apply(w, [("ins", 0, "not")])[0]
        'not a very good film'
    """
    dels = {op[1] for op in ops if op[0] == "del"}
    subs = {op[1]: op[2] for op in ops if op[0] == "sub"}
    ins = {op[1]: op[2] for op in ops if op[0] == "ins"}
    out_words: list[str] = []
    pieces: list[str] = []
    carry: str | None = None  # whitespace of a deleted first word, given to the next kept one
    for i in range(len(w) + 1):
        if i in ins:
            lead = carry if carry is not None else (w.spaces[i] if i < len(w) and not pieces else " ")
            if not pieces and i < len(w) and not out_words:
                lead = w.spaces[i] if carry is None else carry
            pieces.append(lead + ins[i])
            out_words.append(ins[i])
            carry = None
            if i < len(w) and i not in dels:  # the word after an insertion is separated by a space
                pieces.append(" " + subs.get(i, w.words[i]))
                out_words.append(subs.get(i, w.words[i]))
                continue
        if i == len(w):
            break
        if i in dels:
            if not out_words and carry is None:
                carry = w.spaces[i]
            continue
        space = carry if carry is not None else w.spaces[i]
        carry = None
        word = subs.get(i, w.words[i])
        if i in subs and not space and out_words and out_words[-1][-1:].isalnum() and word[:1].isalnum():
            space = " "  # a word put where glued punctuation was must not merge with the word before
        pieces.append(space + word)
        out_words.append(word)
    return "".join(pieces) + w.tail, out_words


def levenshtein(a: Sequence[str], b: Sequence[str]) -> int:
    """Word-level edit distance (insertions, deletions, substitutions cost 1).

    Example:
        >>> levenshtein(["a", "good", "film"], ["a", "bad", "film", "!"])
        2
    """
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def diff(a: Sequence[str], b: Sequence[str]) -> list[list[str]]:
    """A word diff of ``a`` -> ``b`` along one shortest Levenshtein path.

    Returns ``[[op, old, new], ...]`` with ``op`` one of ``"="`` (kept), ``"-"`` (deleted),
    ``"+"`` (inserted), ``"~"`` (substituted); ``old`` / ``new`` are ``""`` where absent.

    Example:
        >>> diff(["a", "good", "film"], ["a", "bad", "film"])
        [['=', 'a', 'a'], ['~', 'good', 'bad'], ['=', 'film', 'film']]
    """
    n, m = len(a), len(b)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    out: list[list[str]] = []
    i, j = n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (a[i - 1] != b[j - 1]):
            out.append(["=" if a[i - 1] == b[j - 1] else "~", a[i - 1], b[j - 1]])
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            out.append(["-", a[i - 1], ""])
            i -= 1
        else:
            out.append(["+", "", b[j - 1]])
            j -= 1
    return out[::-1]
