"""Run a Hugging Face model block by block, starting from a cached residual stream.

Patching an activation at layer ``L`` cannot change anything below ``L``: those layers
are the base run's. :class:`BlockRunner` records, during one ordinary forward pass, the
input of every block and the other arguments the model hands to it (attention mask,
rotary cos/sin, position ids...). It can then run blocks ``L .. n_layers-1`` on any rows
whose residual stream entering block ``L`` is given, calling the original block modules
(so hooks on their sub-modules still fire), and read the logits at the few positions a
target looks at. Nothing of the model is re-implemented or replaced.

Before it is trusted, the runner replays the recorded run from block 0 and compares the
target with the model's own forward pass (``check_error``); callers fall back to plain
forward passes when the two disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..architectures import get_module
from ..hooks import _first, _input_of
from ..model import Output, resolve_blocks
from ..targets import Continuation, Target
from ..tokens import Batch

if TYPE_CHECKING:
    from ..model import LM


def select_rows(batch: Batch, rows: torch.Tensor) -> Batch:
    """The batch made of ``batch``'s rows ``rows`` (``[n]`` indices, repeats allowed)."""
    idx = rows.tolist()
    extra = {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch.size else v)
             for k, v in batch.extra.items()}
    return Batch(batch.input_ids[rows], batch.attention_mask[rows], batch.special[rows], batch.in_prompt[rows],
                 [batch.texts[i] for i in idx], [batch.prompts[i] for i in idx], [batch.offsets[i] for i in idx],
                 [batch.tokens[i] for i in idx], dict(batch.policy), extra)


def head_module(lm: "LM") -> nn.Module | None:
    """The part of the model after the base model that turns hidden states into logits.

    ``lm_head`` for causal LMs, ``cls`` (transform + decoder) for BERT masked LMs: the
    direct child of the model that holds the output embeddings.
    """
    if not lm.has_head:
        return None
    out = lm.model.get_output_embeddings()
    for _, child in lm.model.named_children():
        if child is lm.model.base_model:
            continue
        if child is out or any(m is out for m in child.modules()):
            return child
    return out


def final_norm_module(lm: "LM") -> nn.Module | None:
    if lm.family.final_norm is None:
        return None
    return get_module(lm.model.base_model, lm.family.final_norm)


def read_positions(lm: "LM", target: Target, batch: Batch) -> torch.Tensor | None:
    """``[batch, k]`` positions whose logits ``target`` reads, or ``None`` when it may read any."""
    from ..targets import Contrast, Label, NextToken, prediction_positions

    if isinstance(target, Continuation):
        return batch.extra["continuation_positions"] - 1
    if isinstance(target, (NextToken, Contrast, Label)) or getattr(target, "reads_prediction_position", False):
        return prediction_positions(lm, batch).unsqueeze(1)
    return None


def logits_at(lm: "LM", hidden: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Logits ``[batch, pos, vocab]`` from the last block's output; only ``positions`` are computed.

    Other positions hold zeros (targets that read positions never look at them).
    """
    norm, head = final_norm_module(lm), head_module(lm)
    if positions is None:
        h = norm(hidden) if norm is not None else hidden
        return head(h)
    rows = torch.arange(hidden.shape[0], device=hidden.device).unsqueeze(1).expand_as(positions)
    h = hidden[rows, positions.to(hidden.device)]
    h = norm(h) if norm is not None else h
    picked = head(h)
    logits = hidden.new_zeros(hidden.shape[0], hidden.shape[1], picked.shape[-1])
    logits[rows, positions.to(hidden.device)] = picked
    return logits


def _index_rows(value: Any, rows: torch.Tensor, n: int) -> Any:
    """Select batch rows of every tensor with a leading batch axis of size ``n`` (at any depth)."""
    if isinstance(value, torch.Tensor):
        if value.dim() >= 2 and value.shape[0] == n:
            return value.index_select(0, rows.to(value.device))
        return value
    if isinstance(value, tuple):
        return tuple(_index_rows(v, rows, n) for v in value)
    if isinstance(value, list):
        return [_index_rows(v, rows, n) for v in value]
    if isinstance(value, dict):
        return {k: _index_rows(v, rows, n) for k, v in value.items()}
    return value


@dataclass
class _Call:
    args: tuple
    kwargs: dict


class BlockRunner:
    """Replays a recorded forward pass from any block, on any rows, with any residual stream.

    Args:
        lm: the model handle.
        batch: the base run's batch (already prepared by the target).
        target: the scalar read at the end of each replay.

    Attributes:
        resid: ``[n_layers + 1]`` list of ``[batch, pos, d_model]`` tensors: the residual
            stream entering each block, then the last block's output.
        value: ``[batch]`` the target on the base run, from the model's own forward pass.
        check_error: max absolute difference between a replay from block 0 and ``value``.
    """

    def __init__(self, lm: "LM", batch: Batch, target: Target) -> None:
        self.lm, self.batch, self.target = lm, batch, target
        self.blocks = resolve_blocks(lm.model, lm.family)
        self.calls: list[_Call] = []
        self.resid: list[torch.Tensor] = []
        handles = []

        def record(module, args, kwargs):
            hidden = _input_of(args, kwargs)
            rest_args = tuple(args[1:]) if args else ()
            rest_kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            self.calls.append(_Call(rest_args, rest_kwargs))
            self.resid.append(hidden.detach())

        def last(module, args, output):
            self.resid.append(_first(output).detach())

        for block in self.blocks:
            handles.append(block.register_forward_pre_hook(record, with_kwargs=True))
        handles.append(self.blocks[-1].register_forward_hook(last))
        try:
            with torch.no_grad():
                out = lm.forward(batch, grad=False)
        finally:
            for h in handles:
                h.remove()
        self.value = target(out).detach()
        self.positions = read_positions(lm, target, batch)
        self.passes = float(batch.size)
        replay = self.run(0, self.resid[0], torch.arange(batch.size))
        self.replay_value = replay
        self.check_error = float((replay - self.value).abs().max())

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def run(self, start: int, hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Run blocks ``start ..`` on ``hidden`` and return the target, ``[len(rows)]``.

        Args:
            start: first block to run (``n_layers`` runs none: only the head).
            hidden: ``[len(rows), pos, d_model]`` residual stream entering block ``start``.
            rows: ``[len(rows)]`` which base-run row each replayed row belongs to (its mask,
                positions and target tokens).
        """
        n = self.batch.size
        with torch.no_grad():
            for i in range(start, self.n_layers):
                call = self.calls[i]
                args = _index_rows(call.args, rows, n)
                kwargs = _index_rows(call.kwargs, rows, n)
                hidden = _first(self.blocks[i](hidden, *args, **kwargs))
            sub = select_rows(self.batch, rows)
            positions = None if self.positions is None else self.positions[rows]
            # the base model's last hidden state is the final norm's output when there is one
            norm = final_norm_module(self.lm)
            if not self.lm.has_head:
                out_hidden = norm(hidden) if norm is not None else hidden
                return self.target(Output(logits=None, hidden=out_hidden, batch=sub)).detach()
            logits = logits_at(self.lm, hidden, positions)
            # cost in forward passes of one row: the fraction of blocks replayed
            self.passes += len(rows) * (self.n_layers - start) / max(self.n_layers, 1)
            out_hidden = norm(hidden) if norm is not None else hidden
            return self.target(Output(logits=logits, hidden=out_hidden, batch=sub)).detach()
