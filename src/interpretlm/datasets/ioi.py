"""Indirect object identification (Wang et al., 2022): "When Mary and John went to the store,
John gave a drink to" -> " Mary"."""

from __future__ import annotations

import random
from typing import Any

from .base import Answers, CircuitDataset, DatasetError, keep_single_tokens, tokenizer_of

NAMES = [" Mary", " John", " Tom", " James", " Anna", " Alice", " Bob", " Sarah", " David", " Michael",
         " Paul", " Mark", " Laura", " Emma", " Kate", " Peter", " Daniel", " Jane", " Lisa", " George",
         " Henry", " Rose", " Jack", " Sam", " Max", " Ben", " Lucy", " Chris", " Adam", " Eric", " Grace",
         " Steve", " Amy", " Ryan", " Jason", " Kevin", " Nick", " Helen", " Linda", " Frank"]
PLACES = [" store", " park", " school", " beach", " office", " market", " garden", " station", " restaurant",
          " hospital", " library", " house", " church", " bank", " zoo", " farm"]
OBJECTS = [" drink", " ring", " book", " bone", " ball", " computer", " necklace", " flower", " snack", " key",
           " letter", " gift", " hat", " phone", " cake", " bag"]
TEMPLATES = [
    "When{A} and{B} went to the{place},{S} gave a{object} to",
    "Then,{A} and{B} went to the{place}.{S} gave a{object} to",
    "After{A} and{B} went to the{place},{S} gave a{object} to",
    "While{A} and{B} were working at the{place},{S} gave a{object} to",
    "When{A} and{B} got a{object} at the{place},{S} decided to give it to",
    "Friends{A} and{B} found a{object} at the{place}.{S} gave it to",
]


def ioi(n: int = 64, seed: int = 0, *, lm: Any = None, templates: int | list[int] | str = 0,
        corruption: str = "abc") -> CircuitDataset:
    """Indirect-object identification prompts with ABC corruptions.

    Each clean prompt names two people (the indirect object IO and the subject S), then
    repeats S; the answer is IO. Half the rows put IO first (ABBA), half S first (BABA).
    The ABC corruption replaces the three names by three other names, so nothing in it
    points to IO. The target is ``logit(IO) - logit(S)`` per row.

    Args:
        n: number of prompt pairs.
        seed: makes names, places and objects reproducible.
        lm: the model (or its tokenizer) the prompts are for: names, places and objects
            that are not single tokens for it are dropped with a warning. Default: the
            built-in default model's tokenizer.
        templates: template index, list of indices, or ``"all"``. The default (one
            template) gives prompts of one token length, as ``positions="each"`` needs.
        corruption: ``"abc"`` (three fresh names) or ``"swap"`` (the repeated name
            becomes the other one: the answer flips).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> ds = il.datasets.ioi(n=4, seed=0, lm=tiny_lm("llama"))  # doctest: +SKIP
    """
    if n < 1:
        raise DatasetError(f"n must be at least 1; got {n}.")
    if corruption not in ("abc", "swap"):
        raise DatasetError(f"corruption must be 'abc' or 'swap'; got {corruption!r}.")
    tok = tokenizer_of(lm)
    names = keep_single_tokens(tok, NAMES, "IOI names")
    places = keep_single_tokens(tok, PLACES, "IOI places")
    objects = keep_single_tokens(tok, OBJECTS, "IOI objects")
    if len(names) < 5 or not places or not objects:
        raise DatasetError(f"Too few single-token names ({len(names)}), places ({len(places)}) or objects "
                           f"({len(objects)}) for this tokenizer to build IOI prompts; it needs 5 names, 1 place "
                           "and 1 object.")
    idx = list(range(len(TEMPLATES))) if templates == "all" else ([templates] if isinstance(templates, int)
                                                                   else list(templates))
    for t in idx:
        if not 0 <= t < len(TEMPLATES):
            raise DatasetError(f"Template {t} does not exist: there are {len(TEMPLATES)} (0..{len(TEMPLATES) - 1}).")
    rng = random.Random(seed)
    clean, corrupted, io_list, s_list, meta = [], [], [], [], []
    for i in range(n):
        t = TEMPLATES[idx[i % len(idx)]]
        io, s, c1, c2, c3 = rng.sample(names, 5)
        place, obj = rng.choice(places), rng.choice(objects)
        abba = i % 2 == 0
        a, b = (io, s) if abba else (s, io)
        clean.append(t.format(A=a, B=b, S=s, place=place, object=obj))
        if corruption == "abc":
            corrupted.append(t.format(A=c1, B=c2, S=c3, place=place, object=obj))
        else:
            corrupted.append(t.format(A=a, B=b, S=io, place=place, object=obj))
        io_list.append(io)
        s_list.append(s)
        meta.append({"IO": io, "S": s, "template": idx[i % len(idx)], "order": "ABBA" if abba else "BABA"})
    return CircuitDataset("ioi", clean, corrupted, Answers(io_list, s_list), meta)
