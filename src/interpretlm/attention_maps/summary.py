"""Head summaries: what each attention head attends to, from its pattern alone.

Every score is an average over the query positions of one prompt (padding excluded) and
is computed from a pattern ``[query, key]`` and the prompt's token ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

METRICS = ("entropy", "first_token", "previous_token", "induction", "self", "mean_distance")
"""The head scores :func:`head_scores` computes, in table order."""


def head_scores(pattern: torch.Tensor, token_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores of every head of a stack of patterns.

    Args:
        pattern: ``[..., query, key]`` attention probabilities of one prompt (rows sum to 1).
        token_ids: ``[pos]`` the prompt's token ids (for the induction score).

    Returns:
        ``{metric: [...]}`` with the leading shape of ``pattern``:

        * ``entropy``: mean over queries of ``-sum_k p log p`` (nats);
        * ``first_token``: mean attention paid to position 0 (the usual attention sink);
        * ``previous_token``: mean over queries ``q >= 1`` of ``p[q, q-1]``;
        * ``induction``: mean over queries whose token occurred before, of the attention
          paid to the token *after* each earlier occurrence (``p[q, j+1]`` for
          ``tok[j] == tok[q]``, ``j + 1 < q``); NaN when no token repeats;
        * ``self``: mean of ``p[q, q]``;
        * ``mean_distance``: mean over queries of ``sum_k p[q, k] |q - k|`` (in tokens).

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        >>> head_scores(p, torch.tensor([5, 7]))["previous_token"].item()
        1.0
    """
    p = pattern.float()
    n = p.shape[-1]
    ids = torch.as_tensor(token_ids).to(p.device)
    q_idx = torch.arange(n, device=p.device)
    logp = torch.where(p > 0, p.log(), torch.zeros_like(p))
    out = {
        "entropy": -(p * logp).sum(-1).mean(-1),
        "first_token": p[..., :, 0].mean(-1),
        "self": torch.diagonal(p, dim1=-2, dim2=-1).mean(-1),
        "mean_distance": (p * (q_idx[:, None] - q_idx[None, :]).abs().float()).sum(-1).mean(-1),
    }
    if n > 1:
        out["previous_token"] = torch.diagonal(p, offset=-1, dim1=-2, dim2=-1).mean(-1)
    else:
        out["previous_token"] = torch.full(p.shape[:-2], float("nan"))
    # induction: key j+1 is "the token after an earlier occurrence of the query's token"
    same = ids[:, None] == ids[None, :]                       # [query, key]
    earlier = q_idx[None, :] + 1 < q_idx[:, None]              # j + 1 < q
    match = same & earlier                                     # [query, j]
    target = torch.zeros(n, n, dtype=p.dtype, device=p.device)  # [query, key = j + 1]
    target[:, 1:] = match[:, :-1].to(p.dtype)
    rows = match.any(-1)
    if bool(rows.any()):
        out["induction"] = (p * target).sum(-1)[..., rows].mean(-1)
    else:
        out["induction"] = torch.full(p.shape[:-2], float("nan"))
    return {k: out[k] for k in METRICS}


@dataclass
class HeadsSummary:
    """Head scores of the kept layers and heads.

    Attributes:
        layers: the layer index of each row.
        heads: the head index of each column.
        scores: ``{metric: array [layers, heads]}`` (see :func:`head_scores`).

    Example:
        >>> s = att.heads_summary()  # doctest: +SKIP
        >>> s.top("induction", 3)   # [(layer, head, score), ...]  # doctest: +SKIP
        >>> s["entropy"][0, 2]      # layer layers[0], head heads[2]  # doctest: +SKIP
    """

    layers: list[int]
    heads: list[int]
    scores: dict[str, np.ndarray]

    def __getitem__(self, metric: str) -> np.ndarray:
        return self.scores[metric]

    def score(self, metric: str, layer: int, head: int) -> float:
        """One head's score, addressed by its real layer and head index."""
        return float(self.scores[metric][self.layers.index(layer), self.heads.index(head)])

    def top(self, metric: str, k: int = 5, *, largest: bool = True) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest (or smallest) ``metric``: ``[(layer, head, score)]``."""
        s = np.nan_to_num(self.scores[metric], nan=-np.inf if largest else np.inf)
        order = np.argsort(-s if largest else s, axis=None)[:k]
        out = []
        for flat in order:
            li, hi = np.unravel_index(flat, s.shape)
            out.append((self.layers[li], self.heads[hi], float(self.scores[metric][li, hi])))
        return out

    def rows(self) -> list[dict[str, float | int]]:
        """One dict per head: ``{"layer", "head", <metric>: value...}``."""
        return [{"layer": l, "head": h, **{m: float(v[i, j]) for m, v in self.scores.items()}}
                for i, l in enumerate(self.layers) for j, h in enumerate(self.heads)]

    def __repr__(self) -> str:
        lines = ["layer head " + " ".join(f"{m:>14}" for m in self.scores)]
        for r in self.rows():
            lines.append(f"{r['layer']:>5} {r['head']:>4} " + " ".join(f"{r[m]:>14.3f}" for m in self.scores))
        return "\n".join(lines)
