"""Patching's replay engine: a target read after replaying blocks from a cached residual stream.

The mechanics live in the core (:meth:`LM.record`, :meth:`Recording.replay
<interpretlm.replay.Recording.replay>`, :meth:`LM.logits_at`): one ordinary forward pass
records every block's input and call arguments; blocks ``L .. n_layers-1`` can then be
run again on any rows with any residual stream entering block ``L``. :class:`BlockRunner`
adds the target: its value on the base run, the value after a replay, and the cost in
forward passes.

Before it is trusted, the runner replays the recorded run from block 0 and compares the
target with the model's own forward pass (``check_error``); callers fall back to plain
forward passes when the two disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..model import Output
from ..replay import select_rows
from ..targets import Continuation, Target
from ..tokens import Batch

if TYPE_CHECKING:
    from ..model import LM

__all__ = ["BlockRunner", "read_positions", "select_rows"]


def read_positions(lm: "LM", target: Target, batch: Batch) -> torch.Tensor | None:
    """``[batch, k]`` positions whose logits ``target`` reads, or ``None`` when it may read any."""
    from ..targets import Contrast, Label, NextToken, prediction_positions

    if isinstance(target, Continuation):
        return batch.extra["continuation_positions"] - 1
    if isinstance(target, (NextToken, Contrast, Label)) or getattr(target, "reads_prediction_position", False):
        return prediction_positions(lm, batch).unsqueeze(1)
    return None


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
        self.recording = lm.record(batch)
        self.blocks = self.recording.blocks
        self.resid: list[torch.Tensor] = self.recording.resid
        self.value = target(self.recording.output).detach()
        self.positions = read_positions(lm, target, batch)
        self.passes = float(batch.size)
        self._suffix_ok: bool | None = None
        replay = self.run(0, self.resid[0], torch.arange(batch.size))
        self.replay_value = replay
        self.check_error = float((replay - self.value).abs().max())

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def suffix_ok(self) -> bool:
        """Whether :meth:`run` can recompute only the positions from ``from_pos`` on."""
        if self._suffix_ok is None:
            self._suffix_ok = self.recording.suffix_supported()
            if self.lm.is_causal:  # its cost: the prefix's keys and values, a full and a suffix replay
                self.passes += 2.5 * self.batch.size
        return self._suffix_ok

    def run(self, start: int, hidden: torch.Tensor, rows: torch.Tensor, from_pos: int = 0) -> torch.Tensor:
        """Run blocks ``start ..`` on ``hidden`` and return the target, ``[len(rows)]``.

        Args:
            start: first block to run (``n_layers`` runs none: only the head).
            hidden: ``[len(rows), pos, d_model]`` residual stream entering block ``start``.
            rows: ``[len(rows)]`` which base-run row each replayed row belongs to (its mask,
                positions and target tokens).
            from_pos: the first position the caller changed (at block ``start`` or inside it);
                on a causal model (:attr:`suffix_ok`) only positions ``from_pos ..`` are
                recomputed, the others are the base run's.
        """
        width = hidden.shape[1]
        if from_pos and self.suffix_ok:
            suffix = self.recording.replay(start, hidden[:, from_pos:], rows, from_pos=from_pos)
            prefix = self.resid[-1].index_select(0, rows.to(self.resid[-1].device))[:, :from_pos]
            hidden = torch.cat([prefix, suffix], 1)
        else:
            from_pos = 0
            hidden = self.recording.replay(start, hidden, rows)
        with torch.no_grad():
            sub = select_rows(self.batch, rows)
            positions = None if self.positions is None else self.positions[rows]
            # the base model's last hidden state is the final norm's output when there is one
            if not self.lm.has_head:
                return self.target(Output(logits=None, hidden=self.lm.final_hidden(hidden), batch=sub)).detach()
            logits = self.lm.logits_at(hidden, positions)
            # cost in forward passes of one row: the fraction of blocks (and positions) replayed
            self.passes += len(rows) * (self.n_layers - start) / max(self.n_layers, 1) * (width - from_pos) / width
            return self.target(Output(logits=logits, hidden=self.lm.final_hidden(hidden), batch=sub)).detach()
