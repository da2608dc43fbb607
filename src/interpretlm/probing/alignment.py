"""Word / sub-token alignment through character offsets.

A word is a character span ``(start, end)`` of the text. Tokenizers split words into
sub-tokens; a probe reads one token per word: its ``"last"`` sub-token (the default: in a
decoder it is the first position that has seen the whole word) or its ``"first"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ProbingError

WHICH = ("first", "last")


def align_words(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]],
                special: Sequence[bool] | None = None, which: str = "last") -> list[int]:
    """The token position of each word span (``-1`` where no token overlaps the word).

    Args:
        offsets: ``[pos]`` each token's ``(start, end)`` character span (``Batch.offsets[row]``).
        spans: each word's ``(start, end)`` character span in the same text.
        special: ``[pos]`` True for special tokens, which never stand for a word.
        which: ``"last"`` or ``"first"`` sub-token of the word.

    Example:
        >>> align_words([(0, 3), (3, 5), (5, 9)], [(0, 5), (6, 9)], which="first")
        [0, 2]
    """
    if which not in WHICH:
        raise ProbingError(f"which={which!r} is not a sub-token choice; use 'first' or 'last'.")
    out = []
    for ws, we in spans:
        hit = [p for p, (s, e) in enumerate(offsets)
               if e > s and s < we and e > ws and not (special is not None and special[p])]
        out.append((hit[0] if which == "first" else hit[-1]) if hit else -1)
    return out
