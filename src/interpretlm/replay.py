"""Run a Hugging Face model block by block, starting from a cached residual stream.

Patching an activation at layer ``L`` cannot change anything below ``L``: those layers
are the base run's. :meth:`LM.record` records, during one ordinary forward pass, the
input of every block and the other arguments the model hands to it (attention mask,
rotary cos/sin, position ids...). :meth:`Recording.replay` then runs blocks
``L .. n_layers-1`` on any rows whose residual stream entering block ``L`` is given,
calling the original block modules (so hooks on their sub-modules still fire).
On a causal model a replay can start at a position too (``from_pos``): positions before
it cannot be changed by anything at or after it, so only the suffix is recomputed, its
attention reading the base run's keys and values of the prefix.
:meth:`LM.logits_at` reads the logits at the few positions a target looks at. Nothing of
the model is re-implemented or replaced.

Example:
    >>> import torch
    >>> from interpretlm.testing import tiny_lm
    >>> lm = tiny_lm("gpt2")
    >>> rec = lm.record(["When Mary and John went", "When Tom and Anna went"])
    >>> rows = torch.tensor([1, 1, 0])                                # rows may repeat
    >>> out = rec.replay(1, rec.resid[1][rows], rows)
    >>> torch.allclose(out, rec.resid[-1][rows], atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import hooks
from .tokens import Batch

if TYPE_CHECKING:
    from .model import LM, Output

__all__ = ["BlockCall", "Recording", "head_module", "head_writes", "index_rows", "logits_at", "record",
           "select_rows"]


def select_rows(batch: Batch, rows: torch.Tensor) -> Batch:
    """The batch made of ``batch``'s rows ``rows`` (``[n]`` indices, repeats allowed)."""
    idx = rows.tolist()
    extra = {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch.size else v)
             for k, v in batch.extra.items()}
    return Batch(batch.input_ids[rows], batch.attention_mask[rows], batch.special[rows], batch.in_prompt[rows],
                 [batch.texts[i] for i in idx], [batch.prompts[i] for i in idx], [batch.offsets[i] for i in idx],
                 [batch.tokens[i] for i in idx], dict(batch.policy), extra)


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``fn`` applied to every tensor in it (at any depth of tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value


def index_rows(value: Any, rows: torch.Tensor, n: int) -> Any:
    """Select batch rows of every tensor with a leading batch axis of size ``n`` (at any depth).

    Tensors of other shapes (rotary tables shared by all rows, scalars) pass through.
    """
    return map_tensors(value, lambda t: t.index_select(0, rows.to(t.device)) if t.dim() >= 2 and t.shape[0] == n
                       else t)


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


def logits_at(lm: "LM", hidden: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Logits ``[batch, pos, vocab]`` from the last block's output ``hidden [batch, pos, d_model]``.

    Only ``positions`` (``[batch, k]``) are computed; other positions hold zeros (targets
    that read positions never look at them). ``None`` computes every position.
    """
    norm, head = lm.final_norm_module(), head_module(lm)
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


def head_writes(lm: "LM", layer: int, heads: torch.Tensor) -> torch.Tensor:
    """``[head, batch, pos, d_model]``: each head's output through the output projection, bias removed.

    Args:
        lm: the model handle.
        layer: the block whose attention output projection (``blocks.{layer}.attn``) is used.
        heads: ``[batch, pos, head, d_head]`` per-head values (or a difference of two).
    """
    o_proj = lm.site(f"blocks.{layer}.attn").module
    b, p, H, dh = heads.shape
    x = torch.zeros(H, b, p, H, dh, dtype=heads.dtype, device=heads.device)
    for h in range(H):
        x[h, :, :, h] = heads[:, :, h]
    with torch.no_grad():
        out = o_proj(x.view(H, b, p, H * dh)) - o_proj(torch.zeros(1, 1, 1, H * dh, dtype=x.dtype, device=x.device))
    return out


@dataclass
class BlockCall:
    """The arguments a block was called with, other than its input hidden state."""

    args: tuple
    kwargs: dict


class Recording:
    """One recorded forward pass, replayable from any block on any rows with any residual stream.

    Built by :meth:`LM.record`.

    Attributes:
        lm: the model handle.
        batch: the recorded batch.
        output: the forward pass's :class:`~interpretlm.model.Output`.
        resid: ``n_layers + 1`` tensors ``[batch, pos, d_model]``: the residual stream
            entering each block, then the last block's output.
        calls: ``n_layers`` :class:`BlockCall`: each block's other call arguments.
    """

    def __init__(self, lm: "LM", batch: Batch, output: "Output", resid: list[torch.Tensor],
                 calls: list[BlockCall]) -> None:
        self.lm, self.batch, self.output, self.resid, self.calls = lm, batch, output, resid, calls
        self.blocks = lm.blocks
        self._kv: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._suffix_ok: bool | None = None

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def replay(self, start: int, hidden: torch.Tensor, rows: torch.Tensor | None = None, *,
               from_pos: int = 0) -> torch.Tensor:
        """Run blocks ``start ..`` on ``hidden``; return the last block's output ``[len(rows), pos, d_model]``.

        Args:
            start: first block to run (``n_layers`` runs none and returns ``hidden``).
            hidden: ``[len(rows), pos, d_model]`` residual stream entering block ``start``.
            rows: ``[len(rows)]`` which recorded row each replayed row belongs to (its mask,
                positions, rotary embeddings); default every row once, in order.
            from_pos: recompute only positions ``from_pos ..`` (check :meth:`suffix_supported`
                first): ``hidden`` is then ``[len(rows), pos - from_pos, d_model]``, the residual
                stream at those positions, and so is the output; the prefix's keys and values
                are the recorded run's, so the caller must not have changed anything before
                ``from_pos``.

        Apply :meth:`LM.final_hidden` / :meth:`LM.logits_at` to the result for the last
        hidden state or the logits. Runs without gradients.
        """
        n = self.batch.size
        rows = torch.arange(n) if rows is None else rows
        if from_pos:
            return self._replay_suffix(start, hidden, rows, from_pos)
        with torch.no_grad(), self.lm.running():
            for i in range(start, self.n_layers):
                call = self.calls[i]
                args = index_rows(call.args, rows, n)
                kwargs = index_rows(call.kwargs, rows, n)
                hidden = hooks.first_output(self.blocks[i](hidden, *args, **kwargs))
        return hidden

    def suffix_supported(self) -> bool:
        """Whether :meth:`replay` can start at a position (``from_pos``) on this model.

        Needs a causal model whose attention runs through Transformers' attention interface.
        Checked once, on the recorded rows: a replay from block 0 and the middle position
        must equal the full replay there (relative 1e-4), else the answer is ``False`` and
        callers replay every position.
        """
        if self._suffix_ok is None:
            self._suffix_ok = self._check_suffix()
        return self._suffix_ok

    def _check_suffix(self) -> bool:
        width = self.resid[0].shape[1]
        if not self.lm.is_causal or width < 2:
            return False
        d = width // 2
        try:
            full = self.replay(0, self.resid[0])
            part = self._replay_suffix(0, self.resid[0][:, d:], torch.arange(self.batch.size), d)
        except Exception:  # a family whose blocks the suffix replay cannot drive: replay every position
            self._kv = None
            return False
        ref = full[:, d:].float()
        return part.shape == ref.shape and bool((part.float() - ref).abs().max() <= 1e-4 * (1 + ref.abs().max()))

    def _prefix_kv(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's keys and values ``[batch, kv_head, pos, d_head]`` on the recorded rows."""
        if self._kv is None:
            from transformers.integrations.sdpa_attention import sdpa_attention_forward

            kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            layer_of = {id(m): i for i, block in enumerate(self.blocks) for m in block.modules()}

            def keep(module, query, key, value, attention_mask, **kwargs):
                kv[layer_of[id(module)]] = (key.detach(), value.detach())
                return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

            with self.lm.attention_implementation(keep):
                self.replay(0, self.resid[0])
            if len(kv) != self.n_layers:
                raise RuntimeError("not every block's attention ran through the attention interface")
            self._kv = kv
        return self._kv

    def _replay_suffix(self, start: int, hidden: torch.Tensor, rows: torch.Tensor, d: int) -> torch.Tensor:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        n, width = self.batch.size, self.resid[0].shape[1]
        kv = self._prefix_kv()
        layer_of = {id(m): i for i, block in enumerate(self.blocks) for m in block.modules()}

        def attention(module, query, key, value, attention_mask, **kwargs):
            pk, pv = kv[layer_of[id(module)]]
            idx = rows.to(pk.device)
            key = torch.cat([pk.index_select(0, idx)[:, :, :d].to(key.dtype), key], 2)
            value = torch.cat([pv.index_select(0, idx)[:, :, :d].to(value.dtype), value], 2)
            if attention_mask is None:  # causal, no padding: query i (position d + i) sees keys 0 .. d + i
                q, k = query.shape[2], key.shape[2]
                attention_mask = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)[None, None]
            kwargs.pop("is_causal", None)
            return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

        with torch.no_grad(), self.lm.attention_implementation(attention):
            for i in range(start, self.n_layers):
                call = self.calls[i]
                args = _suffix(index_rows(call.args, rows, n), d, width)
                kwargs = _suffix(index_rows(call.kwargs, rows, n), d, width)
                hidden = hooks.first_output(self.blocks[i](hidden, *args, **kwargs))
        return hidden


def _suffix(value: Any, d: int, width: int) -> Any:
    """A block argument restricted to query positions ``d ..``: masks ``[.., pos, pos]`` lose their
    first ``d`` query rows (keys stay all), rotary tables and position ids ``[b, pos, ..]`` / ``[pos]``
    their first ``d`` positions."""
    def cut(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4 and t.shape[-2] == t.shape[-1] == width:
            return t[..., d:, :]
        if t.dim() in (2, 3) and t.shape[1] == width:
            return t[:, d:]
        if t.dim() == 1 and t.shape[0] == width:
            return t[d:]
        return t
    return map_tensors(value, cut)


def record(lm: "LM", batch: Batch) -> Recording:
    """Run ``batch`` once (no gradients) recording every block's input and call arguments.

    The public entry point is :meth:`LM.record`.
    """
    calls: list[BlockCall] = []
    resid: list[torch.Tensor] = []

    def on_call(args: tuple, kwargs: dict) -> None:
        calls.append(BlockCall(args, kwargs))

    def keep(value: torch.Tensor) -> None:
        resid.append(value.detach())

    last = f"blocks.{lm.n_layers - 1}.resid_post"
    from contextlib import ExitStack
    with ExitStack() as stack:
        for i in range(lm.n_layers):
            stack.enter_context(hooks.hook(lm, f"blocks.{i}.resid_pre", read=keep, call=on_call))
        stack.enter_context(hooks.hook(lm, last, read=keep))
        with torch.no_grad():
            out = lm.forward(batch, grad=False)
    return Recording(lm, batch, out, resid, calls)
