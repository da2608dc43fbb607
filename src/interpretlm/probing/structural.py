"""The structural (distance) probe of Hewitt & Manning (2019).

A linear map ``B`` (``[d, rank]``) is trained so that the squared distance between two
words' transformed vectors, ``||B(h_i - h_j)||²``, matches their distance in the parse
tree (number of edges). It is scored by the Spearman correlation between predicted and
tree distances (per word, averaged) and by UUAS: the share of gold edges recovered by the
minimum spanning tree of the predicted distances.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from .errors import ProbingError


def tree_distances(heads: Sequence[int]) -> torch.Tensor:
    """``[n, n]`` path lengths in the tree given by each word's head (``-1`` for the root).

    Example:
        >>> tree_distances([1, -1, 1]).tolist()
        [[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]
    """
    n = len(heads)
    adj: list[list[int]] = [[] for _ in range(n)]
    for i, h in enumerate(heads):
        if h >= 0:
            adj[i].append(h)
            adj[h].append(i)
    D = torch.full((n, n), float("inf"))
    for s in range(n):
        D[s, s] = 0
        q = deque([s])
        while q:
            u = q.popleft()
            for v in adj[u]:
                if D[s, v] == float("inf"):
                    D[s, v] = D[s, u] + 1
                    q.append(v)
    if torch.isinf(D).any():
        raise ProbingError("The head indices do not form one tree (some words are not connected).")
    return D


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=float)
    sa = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sa[j + 1] == sa[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (``nan`` when either side is constant)."""
    ra, rb = rankdata(np.asarray(a, float)), rankdata(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def min_spanning_edges(D: np.ndarray) -> set[tuple[int, int]]:
    """Edges of a minimum spanning tree of the complete graph with weights ``D`` (Prim)."""
    n = len(D)
    inside = [False] * n
    inside[0] = True
    best = D[0].copy()
    parent = [0] * n
    edges = set()
    for _ in range(n - 1):
        j = min((k for k in range(n) if not inside[k]), key=lambda k: best[k])
        inside[j] = True
        edges.add((min(j, parent[j]), max(j, parent[j])))
        for k in range(n):
            if not inside[k] and D[j, k] < best[k]:
                best[k], parent[k] = D[j, k], j
    return edges


class DistanceProbe:
    """Structural probe: ``||B(h_i - h_j)||²`` ≈ tree distance.

    Args:
        rank: columns of ``B``.
        epochs: passes over the training sentences.
        lr: Adam learning rate.
        seed: initialization and order.

    Example:
        >>> H = [torch.randn(5, 16) for _ in range(20)]  # doctest: +SKIP
        >>> DistanceProbe().fit(H, [tree_distances([-1, 0, 1, 2, 3])] * 20)  # doctest: +SKIP
    """

    def __init__(self, rank: int = 32, epochs: int = 40, lr: float = 1e-2, batch_size: int = 32, seed: int = 0) -> None:
        self.rank, self.epochs, self.lr, self.batch_size, self.seed = rank, epochs, lr, batch_size, seed

    def _center(self, H: torch.Tensor) -> torch.Tensor:
        return (H.float() - self.mean_) / self.scale_

    def fit(self, H: Sequence[torch.Tensor], D: Sequence[torch.Tensor]) -> "DistanceProbe":
        """Train on sentences: ``H[s]`` ``[n_s, d]`` word vectors, ``D[s]`` ``[n_s, n_s]`` tree distances."""
        if not H:
            raise ProbingError("The structural probe needs at least one training sentence.")
        allh = torch.cat([h.float() for h in H])
        self.mean_ = allh.mean(0)
        # Per-dimension scaling: residual streams have a few huge outlier dimensions that
        # would otherwise dominate every distance and stall training.
        self.scale_ = allh.std(0, unbiased=False).clamp_min(1e-6)
        d = allh.shape[1]
        g = torch.Generator().manual_seed(self.seed)
        B = (torch.randn(d, self.rank, generator=g) * 0.1 / d ** 0.5).requires_grad_()
        opt = torch.optim.Adam([B], lr=self.lr)
        n_max = max(len(h) for h in H)
        # Padded batches: [sent, n_max, d] vectors, [sent, n_max, n_max] distances and a pair mask.
        Hs = torch.zeros(len(H), n_max, d)
        Ds = torch.zeros(len(H), n_max, n_max)
        M = torch.zeros(len(H), n_max, n_max)
        lens = torch.tensor([len(h) for h in H], dtype=torch.float)
        for s, (h, dist) in enumerate(zip(H, D)):
            k = len(h)
            Hs[s, :k] = self._center(h)
            Ds[s, :k, :k] = dist
            M[s, :k, :k] = 1
        from .probes import one_thread
        with torch.enable_grad(), one_thread():
            for _ in range(self.epochs):
                order = torch.randperm(len(H), generator=g)
                for a in range(0, len(H), self.batch_size):
                    idx = order[a:a + self.batch_size]
                    pred = self._pairwise(Hs[idx] @ B)
                    loss = ((pred - Ds[idx]).abs() * M[idx]).sum((1, 2)) / lens[idx] ** 2
                    opt.zero_grad()
                    loss.mean().backward()
                    opt.step()
        self.B_ = B.detach()
        return self

    @staticmethod
    def _pairwise(T: torch.Tensor) -> torch.Tensor:
        diff = T.unsqueeze(-2) - T.unsqueeze(-3)
        return (diff ** 2).sum(-1)

    def distances(self, h: torch.Tensor) -> torch.Tensor:
        """``[n, n]`` predicted squared distances of one sentence's word vectors ``[n, d]``."""
        return self._pairwise(self._center(h) @ self.B_)

    def evaluate(self, H: Sequence[torch.Tensor], D: Sequence[torch.Tensor], min_len: int = 5) -> dict[str, float]:
        """Spearman (per word against tree distances, averaged) and UUAS on sentences of ``min_len`` words or more.

        Falls back to every sentence of two words or more when none is that long.
        """
        pairs = [(h, d) for h, d in zip(H, D) if len(h) >= min_len] or [(h, d) for h, d in zip(H, D) if len(h) >= 2]
        rhos, hit, total = [], 0, 0
        for h, dist in pairs:
            P = self.distances(h).numpy()
            G = dist.numpy()
            n = len(G)
            for i in range(n):
                others = [j for j in range(n) if j != i]
                r = spearman(P[i, others], G[i, others])
                if r == r:
                    rhos.append(r)
            gold = {(min(i, j), max(i, j)) for i in range(n) for j in range(n) if G[i, j] == 1}
            hit += len(gold & min_spanning_edges(P))
            total += len(gold)
        return {"spearman": float(np.mean(rhos)) if rhos else float("nan"),
                "uuas": hit / total if total else float("nan"), "n_sentences": len(pairs)}
