"""Attention rollout and attention flow (Abnar & Zuidema, 2020).

Both treat each layer as a mixing matrix ``Ã = ½·mean_h(A_h) + ½·I`` (the residual
connection), rows renormalized. Rollout multiplies the layers' matrices; flow solves a
max-flow problem on the layered graph whose edge capacities are the ``Ã`` entries, so it
is exponential in nothing but slow in the number of tokens: it is meant for short inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ContextLengthError, EmptyInputError
from ..model import LM
from ..progress import track
from ..registry import CheckSpec, register
from ..results import Result
from ..tokens import Batch, Prompt
from ..viz.figures import Figure, TokenShading
from .patterns import run_patterns


def _mixing(pattern: torch.Tensor, residual: bool) -> torch.Tensor:
    """``[batch, head, q, k]`` -> ``[q, k]``: head mean, plus the identity for the residual, renormalized."""
    a = pattern[0].float().mean(0)
    if residual:
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return a / a.sum(-1, keepdim=True)


@dataclass(kw_only=True)
class AttentionFlow(Result):
    """How much each input token feeds each position at the top of the model.

    Attributes:
        kind: ``"rollout"`` or ``"flow"``.
        tokens: the prompt's tokens.
        special: ``[pos]`` special-token marks.
        positions: the top-layer positions explained (rows of ``matrix``).
        matrix: ``[positions, key]``; for rollout each row sums to 1, for flow each entry is
            the maximum flow from input token ``key`` to the row's position.
        residual: whether the residual connection was mixed in.
    """

    kind: str = "rollout"
    prompt: str | None = None
    tokens: list[str] = field(default_factory=list)
    special: list[bool] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    matrix: Any = None
    residual: bool = True

    def scores(self, position: int = -1) -> np.ndarray:
        """``[key]`` the row of one explained position (default: the last one)."""
        pos = self.positions[position] if position < 0 else position
        return np.asarray(self.matrix)[self.positions.index(pos)]

    def summary(self) -> str:
        return f"attention {self.kind} · model {self.model} · {len(self.tokens)} tokens"

    def figures(self) -> dict[str, Figure]:
        """One shading per explained position (the last 8, last first): ``"into_{position}"``."""
        m = np.asarray(self.matrix, dtype=float)
        return {f"into_{pos}": TokenShading(self.tokens, row.tolist(), special=self.special, label=self.kind,
                                            unit="share of attention into the position (sums to 1)",
                                            caption=f"into position {pos} ({self.tokens[pos]!r}):")
                for row, pos in list(zip(m, self.positions))[-8:][::-1]}


def rollout_matrix(patterns: torch.Tensor, residual: bool = True) -> torch.Tensor:
    """Rollout from stacked patterns ``[layers, heads, query, key]`` (all layers, in order) -> ``[query, key]``.

    Example:
        >>> att = il.attention(lm, "The cat sat on the mat")  # all layers  # doctest: +SKIP
        >>> rollout_matrix(att.patterns)[-1]  # what feeds the last token  # doctest: +SKIP
    """
    r = None
    for layer_pattern in torch.as_tensor(patterns):
        mix = _mixing(layer_pattern[None], residual)
        r = mix if r is None else mix @ r
    return r


def _prepare(lm: LM, inputs: Prompt | Batch, chat: bool) -> Batch:
    batch = lm.tokenize(inputs, chat=chat)
    if batch.size != 1:
        raise EmptyInputError(f"Give one prompt (got {batch.size}); call once per prompt.")
    if int(batch.lengths[0]) == 0:
        raise EmptyInputError("The prompt has no tokens; give some text or token ids.")
    return batch


def _mixing_matrices(lm: LM, batch: Batch, residual: bool, on_layer) -> None:
    run_patterns(lm, batch, list(range(lm.n_layers)), lambda layer, p: on_layer(layer, _mixing(p, residual)),
                 stop_early=False)


@register("attention_rollout", family="attention", takes="prompt", result=AttentionFlow, target="none",
          summary="attention rollout: product of residual-mixed, head-averaged attention", check=CheckSpec("row_sum_error", 1e-3, advice="attention rows must sum to 1; the captured weights are not probabilities."))
def attention_rollout(lm: LM, inputs: Prompt | Batch, *, residual: bool = True, chat: bool = False) -> AttentionFlow:
    """Attention rollout: the product of every layer's head-averaged, residual-mixed attention.

    The product is accumulated layer by layer as the model runs, so only one ``[pos, pos]``
    matrix is held, whatever the number of layers.

    Args:
        lm: the model handle.
        inputs: one prompt or token ids.
        residual: mix in the identity (``½·A + ½·I``) for the residual connection.

    Returns:
        :class:`AttentionFlow` with ``matrix [pos, pos]`` (rows sum to 1).

    Example:
        >>> r = il.attention_rollout(lm, "The cat sat on the mat because it was tired")  # doctest: +SKIP
        >>> r.scores()  # [key]: how much each token feeds the last position  # doctest: +SKIP
    """
    batch = _prepare(lm, inputs, chat)
    state: dict[str, torch.Tensor] = {}

    def fold(layer: int, mix: torch.Tensor) -> None:
        state["r"] = mix if "r" not in state else mix @ state["r"]

    _mixing_matrices(lm, batch, residual, fold)
    r = state["r"].cpu()
    n = r.shape[0]
    return AttentionFlow(model=lm.name, method="attention_rollout", kind="rollout", policy=dict(batch.policy),
                         prompt=batch.prompts[0], tokens=list(batch.tokens[0]),
                         special=[bool(x) for x in batch.special[0]], positions=list(range(n)), matrix=r,
                         residual=residual,
                         diagnostics={"forward_passes": 1, "row_sum_error": float((r.sum(-1) - 1).abs().max())})


@register("attention_flow", family="attention", takes="prompt", result=AttentionFlow, target="none",
          summary="attention flow: max-flow from each token through all layers", check=CheckSpec("row_sum_error", 1e-3, advice="attention rows must sum to 1; the captured weights are not probabilities."))
def attention_flow(lm: LM, inputs: Prompt | Batch, *, positions: list[int] | None = None, residual: bool = True,
                   max_tokens: int = 48, chat: bool = False) -> AttentionFlow:
    """Attention flow: max-flow from each input token to top-layer positions through all layers.

    Args:
        lm: the model handle.
        inputs: one short prompt or token ids.
        positions: top-layer positions to explain (default: the last token).
        residual: mix in the identity for the residual connection.
        max_tokens: refuse longer prompts (the cost grows with ``layers · pos²`` edges per flow).

    Returns:
        :class:`AttentionFlow` with ``matrix [positions, key]``.

    Example:
        >>> f = il.attention_flow(lm, "The cat sat on the mat")  # doctest: +SKIP
        >>> f.scores()  # [key]  # doctest: +SKIP
    """
    import networkx as nx

    batch = _prepare(lm, inputs, chat)
    n = int(batch.lengths[0])
    if n > max_tokens:
        raise ContextLengthError(f"Attention flow solves one max-flow problem per token on a graph with "
                                 f"{lm.n_layers}·{n}² edges; {n} tokens exceed max_tokens={max_tokens}. Use "
                                 "il.attention_rollout for long prompts, or raise max_tokens.")
    positions = [n - 1] if positions is None else [p + n if p < 0 else p for p in positions]
    if any(not 0 <= p < n for p in positions):
        raise ContextLengthError(f"Positions {positions} are outside the prompt's {n} tokens.")
    mats: list[np.ndarray] = []
    _mixing_matrices(lm, batch, residual, lambda layer, m: mats.append(m.cpu().double().numpy()))
    # the flow network is only meaningful when every layer's mixing rows are distributions
    # (np.max, not max(): a NaN row must propagate, not be skipped by Python's comparisons)
    row_error = float(np.max([np.abs(m.sum(-1) - 1).max() for m in mats])) if mats else 0.0
    graph = nx.DiGraph()
    for layer, m in enumerate(mats):  # edge (layer, k) -> (layer + 1, q) with capacity m[q, k]
        for q in range(n):
            for k in range(n):
                if m[q, k] > 0:
                    graph.add_edge((layer, k), (layer + 1, q), capacity=float(m[q, k]))
    top = len(mats)
    out = np.zeros((len(positions), n))
    jobs = [(i, p, k) for i, p in enumerate(positions) for k in range(n)]
    if not all(np.isfinite(m).all() for m in mats):  # NaN capacities would silently count as 0
        out[:] = np.nan
        jobs = []
    for i, p, k in track(jobs, "attention flow"):
        if (0, k) in graph and (top, p) in graph:
            out[i, k] = nx.maximum_flow_value(graph, (0, k), (top, p))
    return AttentionFlow(model=lm.name, method="attention_flow", kind="flow", policy=dict(batch.policy),
                         prompt=batch.prompts[0], tokens=list(batch.tokens[0]),
                         special=[bool(x) for x in batch.special[0]], positions=positions,
                         matrix=torch.from_numpy(out).float(), residual=residual,
                         diagnostics={"forward_passes": 1, "max_flow_problems": len(jobs),
                                      "row_sum_error": row_error})
