"""Induction: a random token sequence repeated; the second copy is predictable by copying."""

from __future__ import annotations

from typing import Any

import torch

from .base import Answers, CircuitDataset, DatasetError, tokenizer_of


def induction(n: int = 32, seq_len: int = 10, seed: int = 0, *, lm: Any = None,
              vocab: tuple[int, int] | None = None) -> CircuitDataset:
    """Repeated random tokens: ``r_1 .. r_k r_1 .. r_{k-1}`` -> ``r_k``.

    The corrupted prompt has a different random first copy, so nothing earlier in it
    tells which token comes next. The target is ``log p(r_k)`` per row. Prompts are
    token ids, all of length ``2 * seq_len - 1``.

    Args:
        n: number of prompt pairs.
        seq_len: length ``k`` of the repeated segment (at least 2).
        seed: makes the draw reproducible.
        lm: the model or tokenizer (for its vocabulary and special tokens).
        vocab: ``(low, high)`` range of token ids to draw from (default: the middle of
            the vocabulary, away from special and byte tokens).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> ds = il.datasets.induction(n=4, seq_len=5, lm=tiny_lm("gpt2"))
        >>> len(ds.clean[0])
        9
    """
    if seq_len < 2 or n < 1:
        raise DatasetError(f"Need n >= 1 and seq_len >= 2; got n={n}, seq_len={seq_len}.")
    tok = tokenizer_of(lm)
    size = len(tok)
    low, high = vocab if vocab is not None else (size // 8, size - size // 8)
    specials = set(getattr(tok, "all_special_ids", []) or [])
    pool = torch.tensor([i for i in range(low, high) if i not in specials])
    if len(pool) < 2 * seq_len:
        raise DatasetError(f"The token range {low}..{high} has only {len(pool)} usable ids; widen vocab=.")
    g = torch.Generator().manual_seed(seed)
    clean, corrupted, answers, meta = [], [], [], []
    for _ in range(n):
        r = pool[torch.randperm(len(pool), generator=g)[:seq_len]].tolist()
        other = pool[torch.randperm(len(pool), generator=g)[:seq_len]].tolist()
        while other[-1] == r[-1]:
            other = pool[torch.randperm(len(pool), generator=g)[:seq_len]].tolist()
        clean.append(r + r[:-1])
        corrupted.append(other + r[:-1])
        answers.append(r[-1])
        meta.append({"segment": r})
    return CircuitDataset("induction", clean, corrupted, Answers(answers, None), meta)
