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
          progress: bool | None = None, desc: str = "patching") -> torch.Tensor:
    """The target after each patch, for every prompt: ``[len(patches), batch]``.

    Args:
        runner: the base run (patches are applied on top of it).
        patches: what to patch; each becomes ``batch`` replayed rows.
        source: gives the value written by a patch of ``(component, layer)``.
        batch_size: replayed rows per forward pass.
        progress: show a progress bar (default: only on a terminal).
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
        for c in range(0, len(pairs), batch_size):
            chunk = pairs[c:c + batch_size]
            s_idx = torch.tensor([s for s, _ in chunk])
            rows = torch.tensor([b for _, b in chunk])
            pos_mask = torch.stack([patches[s].pos_mask[b] for s, b in chunk])  # [R, pos]
            value = src.index_select(0, rows.to(src.device))
            hidden = runner.resid[start].index_select(0, rows.to(runner.resid[start].device))
            if comp in ("resid_pre", "resid_post"):
                m = pos_mask.to(hidden.device).unsqueeze(-1)
                hidden = torch.where(m, value.to(hidden.dtype), hidden)
                vals = runner.run(start, hidden, rows)
            else:
                if comp == "heads":
                    head_mask = torch.zeros(len(chunk), lm.n_heads, dtype=torch.bool)
                    for r, (s, _) in enumerate(chunk):
                        h = patches[s].heads
                        head_mask[r, list(h) if h is not None else slice(None)] = True
                    m = (pos_mask[:, :, None] & head_mask[:, None, :]).unsqueeze(-1)
                else:
                    m = pos_mask.unsqueeze(-1)

                def edit(x: torch.Tensor, m: torch.Tensor = m, value: torch.Tensor = value) -> torch.Tensor:
                    return torch.where(m.to(x.device), value.to(x.device, x.dtype), x)

                with hooks.intervene(lm, {_site_name(comp, layer): edit}):
                    vals = runner.run(start, hidden, rows)
            out[s_idx, rows] = vals.float().cpu()
            bar.update(len(chunk))
    bar.close()
    return out
