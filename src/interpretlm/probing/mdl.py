"""Minimum description length probing with the online code (Voita & Titov, 2020).

The training examples are sent in blocks: the first block with the uniform code
(``log2 K`` bits per label), and every later block with a probe trained on all the blocks
before it. The codelength is the sum; *compression* is the uniform codelength
(``N log2 K``) divided by it. Labels a representation makes easy to predict from little
data compress well; random labels compress about 1x.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

# Block boundaries as fractions of the data (Voita & Titov: 0.1% ... 100%).
FRACTIONS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)


def online_codelength(new_probe: Callable[[], object], X: torch.Tensor, y: torch.Tensor, n_classes: int, *,
                      fractions: Sequence[float] = FRACTIONS, min_first: int = 10, seed: int = 0) -> dict[str, float]:
    """Online codelength of labels ``y`` given features ``X``.

    Args:
        new_probe: makes a fresh probe (``fit(X, y, n_classes)``, ``predict_proba``).
        X: ``[n, d]`` features; y: ``[n]`` class indices.
        n_classes: size of the label set ``K``.
        fractions: block boundaries as fractions of ``n``.
        min_first: the first block holds at least this many examples (and at least ``K``).
        seed: the order in which examples are sent.

    Returns:
        ``{"codelength": bits, "uniform": bits, "compression": uniform / codelength,
        "blocks": number of blocks}``.

    Example:
        >>> from interpretlm.probing.probes import LogisticProbe
        >>> X = torch.randn(400, 4); y = (X[:, 0] > 0).long()
        >>> online_codelength(lambda: LogisticProbe(), X, y, 2)["compression"] > 2
        True
    """
    n = len(y)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    X, y = X[order], y[order]
    first = min(n, max(min_first, n_classes))
    bounds = sorted({first} | {min(n, max(first, int(round(f * n)))) for f in fractions} | {n})
    bits_per_uniform = math.log2(max(n_classes, 2))
    code = first * bits_per_uniform
    for a, b in zip(bounds[:-1], bounds[1:]):
        probe = new_probe()
        probe.fit(X[:a], y[:a], n_classes)
        p = probe.predict_proba(X[a:b])[torch.arange(b - a), y[a:b]]
        code += float(-torch.log2(p.clamp_min(1e-12)).sum())
    uniform = n * bits_per_uniform
    return {"codelength": code, "uniform": uniform, "compression": uniform / code if code > 0 else float("inf"),
            "blocks": len(bounds)}
