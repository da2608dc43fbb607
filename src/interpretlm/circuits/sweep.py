"""Many patches per forward pass: the engine behind patching, ablation sweeps and path patching.

A *patch* sets one component of one layer (``resid_pre``, ``resid_post``, ``attn``,
``mlp`` or some ``heads``), at some positions, to a *source* value (the clean run's for
activation patching; zeros, means or other inputs' for ablation). Every row of a replayed
batch is one (patch, prompt) pair, so rows of one batch carry different patches. Rows are
grouped by the block their patch lives in and replayed with :class:`BlockRunner` from
that block on: the blocks below are the base run's and are never recomputed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import hooks
from ..errors import InterpretLMError
from ..progress import bar as progress_bar
from .runner import BlockRunner

COMPONENTS = ("resid_pre", "resid_post", "attn", "mlp", "heads")


class PatchingError(InterpretLMError, ValueError):
    """Inputs that cannot be patched (different token lengths, equal clean and corrupted metric...)."""


@dataclass(frozen=True)
class Patch:
    """One patch: a component of one layer, at the positions of ``pos_mask``, for some heads.

    Attributes:
        layer: the block.
        component: ``resid_pre``, ``resid_post``, ``attn``, ``mlp`` or ``heads``.
        pos_mask: ``[batch, pos]`` True where the source value is written (per prompt row).
        heads: head indices for ``heads`` (``None``: all heads).
    """

    layer: int
    component: str
    pos_mask: torch.Tensor
    heads: tuple[int, ...] | None = None

    @property
    def start(self) -> int:
        """The first block whose computation the patch can change."""
        return self.layer + 1 if self.component == "resid_post" else self.layer


Sources = Callable[[str, int], torch.Tensor]
"""``(component, layer) -> [batch, pos, d_model]`` (``[batch, pos, head, d_head]`` for heads)."""


def _site_name(component: str, layer: int) -> str:
    return f"blocks.{layer}.attn.heads" if component == "heads" else f"blocks.{layer}.{component}"


def sweep(runner: BlockRunner, patches: list[Patch], source: Sources, *, batch_size: int = 64,
          progress: bool | None = None, desc: str = "patching", base: Sources | None = None) -> torch.Tensor:
    """The target after each patch, for every prompt: ``[len(patches), batch]``.

    A patch changes nothing before the first position where what it writes differs from the
    base run (``base``, when given; else its first patched position): a patch that changes
    nothing gets the base run's value without a replay, and on a causal model the others
    replay only the positions from there on (:meth:`BlockRunner.run`'s ``from_pos``).

    Args:
        runner: the base run (patches are applied on top of it).
        patches: what to patch; each becomes ``batch`` replayed rows.
        source: gives the value written by a patch of ``(component, layer)``.
        batch_size: replayed rows per forward pass.
        progress: show a progress bar (default: only on a terminal).
        desc: the progress bar's label.
        base: gives the base run's own value of ``(component, layer)`` (the residual stream's
            is the runner's), so positions where the source equals it are known unchanged.
    """
    lm = runner.lm
    n = runner.batch.size
    groups: dict[tuple[int, str, int], list[int]] = defaultdict(list)
    for s, p in enumerate(patches):
        if p.component not in COMPONENTS:
            raise PatchingError(f"Unknown component {p.component!r}; use one of {COMPONENTS}.")
        groups[(p.start, p.component, p.layer)].append(s)
    out = torch.full((len(patches), n), float("nan"))
    total = sum(len(v) for v in groups.values()) * n
    bar = progress_bar(total, desc, progress)
    for (start, comp, layer), spec_ids in sorted(groups.items()):
        pairs = [(s, b) for s in spec_ids for b in range(n)]
        src = source(comp, layer)
        own = runner.resid[layer + (comp == "resid_post")] if comp in ("resid_pre", "resid_post") else \
            (base(comp, layer) if base is not None else None)  # None: every patched position may change
        for c in range(0, len(pairs), batch_size):
            chunk = pairs[c:c + batch_size]
            s_idx = torch.tensor([s for s, _ in chunk])
            rows = torch.tensor([b for _, b in chunk])
            pos_mask = torch.stack([patches[s].pos_mask[b] for s, b in chunk])  # [R, pos]
            value = src.index_select(0, rows.to(src.device))
            hidden = runner.resid[start].index_select(0, rows.to(runner.resid[start].device))
            if comp == "heads":
                head_mask = torch.zeros(len(chunk), lm.n_heads, dtype=torch.bool)
                for r, (s, _) in enumerate(chunk):
                    h = patches[s].heads
                    head_mask[r, list(h) if h is not None else slice(None)] = True
                m = pos_mask[:, :, None] & head_mask[:, None, :]  # [R, pos, head]
            else:
                m = pos_mask
            changed = _changed(m, value, None if own is None else own.index_select(0, rows.to(own.device)))
            same = ~changed.any(1)
            if same.any():  # writes what the base run has: its value, no replay
                out[s_idx[same], rows[same]] = runner.value.index_select(0, rows[same].to(runner.value.device)
                                                                         ).float().cpu()
            keep = (~same).nonzero().flatten()
            if len(keep):
                first = int(changed[keep].float().argmax(1).min()) if runner.suffix_ok else 0
                rk = rows[keep]
                v, h, mk = value[keep], hidden[keep], m[keep].unsqueeze(-1)
                if comp in ("resid_pre", "resid_post"):
                    h = torch.where(mk.to(h.device), v.to(h.device, h.dtype), h)
                    vals = runner.run(start, h, rk, first)
                else:
                    mk, v = mk[:, first:], v[:, first:]

                    def edit(x: torch.Tensor, m: torch.Tensor = mk, value: torch.Tensor = v) -> torch.Tensor:
                        return torch.where(m.to(x.device), value.to(x.device, x.dtype), x)

                    with hooks.intervene(lm, {_site_name(comp, layer): edit}):
                        vals = runner.run(start, h, rk, first)
                out[s_idx[keep], rk] = vals.float().cpu()
            bar.update(len(chunk))
    bar.close()
    return out


def _changed(mask: torch.Tensor, value: torch.Tensor, own: torch.Tensor | None) -> torch.Tensor:
    """``[R, pos]``: positions where a patch writes something other than the base run's value.

    ``mask`` is ``[R, pos]`` (``[R, pos, head]`` for heads); without the base run's value every
    patched position counts as changed.
    """
    if own is None:
        changed = mask
    else:
        diff = value.to(own.device, own.dtype) != own
        changed = mask.to(diff.device) & diff.any(-1)
    return changed.any(-1).cpu() if changed.dim() == 3 else changed.cpu()
