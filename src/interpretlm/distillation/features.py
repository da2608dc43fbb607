"""Word and n-gram features of texts: counts (scikit-learn's ``CountVectorizer``) and word spans.

Every surrogate reads a text as counts of lower-cased word n-grams. The vocabulary is
fitted on the training texts only; a stored vocabulary rebuilds the same features in any
process, so a saved surrogate predicts and explains without the LM.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

TOKEN_PATTERN = r"(?u)\b\w+\b"  # every word, one-letter words included ("a", "I")


def vectorizer(ngram: int, vocabulary: Sequence[str] | None = None, min_df: int = 1,
               max_features: int | None = None):
    """A ``CountVectorizer`` of lower-cased word 1..``ngram``-grams (fixed ``vocabulary`` if given;
    else the ``max_features`` most frequent, or all)."""
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, ngram_range=(1, int(ngram)),
                           vocabulary=list(vocabulary) if vocabulary is not None else None,
                           min_df=min_df if vocabulary is None else 1, dtype=np.float64,
                           max_features=max_features if vocabulary is None else None)


def counts(texts: Sequence[str], terms: Sequence[str], ngram: int) -> np.ndarray:
    """``[n_texts, n_terms]`` counts of each term (an n-gram of lower-cased words) in each text.

    Example:
        >>> counts(["The good, the bad"], ["the", "good", "the bad"], 2).tolist()
        [[2.0, 1.0, 1.0]]
    """
    if not terms:
        return np.zeros((len(texts), 0))
    return vectorizer(ngram, terms).transform(list(texts)).toarray()


def words(text: str) -> list[tuple[str, int, int]]:
    """The words of ``text`` as the features see them: ``(lower-cased word, start, end)``.

    Example:
        >>> words("Not bad!")
        [('not', 0, 3), ('bad', 4, 7)]
    """
    return [(m.group().lower(), m.start(), m.end()) for m in re.finditer(TOKEN_PATTERN, text)]


def term_positions(text: str, term: str) -> list[list[int]]:
    """For each occurrence of ``term`` in ``text``, the indices of its words in :func:`words`."""
    ws = [w for w, _, _ in words(text)]
    parts = term.split(" ")
    k = len(parts)
    return [list(range(i, i + k)) for i in range(len(ws) - k + 1) if ws[i:i + k] == parts]


def delete_words(text: str, rng: np.random.Generator, p: float = 0.2) -> str:
    """``text`` with each word deleted with probability ``p`` (at least one deleted, one kept).

    Example:
        >>> delete_words("a b c d", np.random.default_rng(0), p=0.5) != "a b c d"
        True
    """
    ws = words(text)
    if len(ws) < 2:
        return text
    drop = rng.random(len(ws)) < p
    if not drop.any():
        drop[rng.integers(len(ws))] = True
    if drop.all():
        drop[rng.integers(len(ws))] = False
    out, last = [], 0
    for (_, a, b), d in zip(ws, drop):
        if d:
            out.append(text[last:a].rstrip(" ") if out or a > 0 else "")
            last = b
    out.append(text[last:])
    kept = "".join(out)
    return re.sub(r"\s+", " ", kept).strip() or text
