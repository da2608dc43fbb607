"""Activation patching: how much of the clean behaviour does one component restore?

``il.patch(lm, clean, corrupted, target, over=..., positions=...)`` runs the corrupted
prompts with one component (residual stream, attention output, MLP output or a head)
set to its value on the clean prompts, for every layer (and position / head), and
reports ``effect = (patched - corrupted) / (clean - corrupted)`` of the target averaged
over prompts: 1 means the component carries everything the target needs, 0 nothing.

Many patches share one forward pass (:mod:`~interpretlm.circuits.sweep`), and a patch at
layer ``L`` is replayed from block ``L`` on the corrupted run's cached residual stream.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import CheckWarning
from ..progress import track
from ..registry import CheckSpec, register
from ..results import Result
from ..targets import TargetLike
from ..tokens import Batch, Prompts
from ..viz.figures import Figure, Heatmap
from .metric import NoiseWarning, normaliser
from .pairs import shifted, tokenize_pairs
from .runner import BlockRunner
from .sweep import COMPONENTS, Patch, PatchingError, sweep

if TYPE_CHECKING:
    from ..model import LM

CHECK_TOL = 1e-3


@dataclass(kw_only=True)
class PatchResult(Result):
    """Effects of activation patching.

    Attributes:
        effect: the grid of ``(patched - corrupted) / (clean - corrupted)``; axes named in
            ``axes``: ``[layer, pos]`` (``positions="each"``), ``[layer]`` (``"all"`` /
            ``"last"``), ``[layer, head]`` (``over="heads"``), ``[layer, pos, head]``.
        patched: the same grid holding the patched metric itself (mean over prompts).
        axes: names of ``effect``'s axes.
        layers: the layer of each row.
        positions: the position of each ``pos`` column (or ``"all"`` / ``"last"``).
        tokens: the corrupted prompt's tokens (row 0), for labels.
        clean_tokens: the clean prompt's tokens (row 0).
        over: the patched component.
        clean_value, corrupt_value: the metric on clean and corrupted prompts (means).
        n_prompts: how many prompt pairs were averaged.
    """

    effect: Any = None
    patched: Any = None
    axes: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    positions: Any = "each"
    tokens: list[str] = field(default_factory=list)
    clean_tokens: list[str] = field(default_factory=list)
    over: str = "resid_pre"
    clean_value: float = 0.0
    corrupt_value: float = 0.0
    n_prompts: int = 1

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` cells with the largest absolute effect, labelled (``"L9 H6"``, ``"L3 ' John'"``)."""
        e = np.asarray(self.effect, dtype=float)
        flat = np.argsort(-np.abs(np.nan_to_num(e, nan=0.0)).ravel())[:k]
        out = []
        for f in flat:
            idx = np.unravel_index(f, e.shape)
            out.append((self.label(idx), float(e[idx])))
        return out

    def label(self, idx: Sequence[int]) -> str:
        parts = []
        for axis, i in zip(self.axes, idx):
            if axis == "layer":
                parts.append(f"L{self.layers[i]}")
            elif axis == "head":
                parts.append(f"H{i}")
            elif axis == "pos":
                p = self.positions[i] if isinstance(self.positions, list) else i
                tok = self.tokens[p] if p < len(self.tokens) else ""
                parts.append(f"{p}:{tok!r}")
            else:  # path patching: "logits" or a list of receivers
                parts.append(axis if axis == "logits" else f"{axis} {i}")
        return " ".join(parts)

    def summary(self) -> str:
        top = ", ".join(f"{lab} {v:+.2f}" for lab, v in self.top(3))
        return (f"model {self.model} · over {self.over} · {self.n_prompts} prompt pair(s) · clean "
                f"{self.clean_value:.3f}, corrupted {self.corrupt_value:.3f} · top {top}")

    def figures(self) -> dict[str, Figure]:
        """``"effect"``: a :class:`Heatmap` of the effect (rows: layers); for ``[layer, pos, head]``
        one heatmap per position, ``"effect_pos{p}"``."""
        e = np.asarray(self.effect, dtype=float)
        rows = [f"L{l}" for l in self.layers]
        if e.ndim == 1:
            return {"effect": Heatmap(rows, [self.over], e[:, None].tolist(), label="effect", unit="(patched − corrupted) / (clean − corrupted)", nan="not patchable here (a receiver that cannot receive from the sender)")}
        if self.axes[-1] == "head":
            if e.ndim == 3:  # [layer, pos, head] -> one grid per position
                return {f"effect_pos{p}": Heatmap(rows, [f"H{h}" for h in range(e.shape[2])], e[:, j].tolist(),
                                                  label="effect", unit="(patched − corrupted) / (clean − corrupted)", nan="not patchable here (a receiver that cannot receive from the sender)", title=f"position {p}: "
                                                  f"{self.tokens[p] if p < len(self.tokens) else ''!r}")
                        for j, p in enumerate(self._pos_list())}
            return {"effect": Heatmap(rows, [f"H{h}" for h in range(e.shape[1])], e.tolist(), label="effect",
                                      unit="(patched − corrupted) / (clean − corrupted)", nan="not patchable here (a receiver that cannot receive from the sender)")}
        cols = [f"{p} {self.tokens[p] if p < len(self.tokens) else ''!r}" for p in self._pos_list()]
        return {"effect": Heatmap(rows, cols, e.tolist(), label="effect", unit="(patched − corrupted) / (clean − corrupted)", nan="not patchable here (a receiver that cannot receive from the sender)")}

    def _pos_list(self) -> list[int]:
        if isinstance(self.positions, list):
            return [int(p) for p in self.positions]
        e = np.asarray(self.effect)
        return list(range(e.shape[1]))


def _positions_spec(positions: Any, width: int) -> tuple[str, list[int] | None]:
    """``("each" | "all" | "last" | "list", explicit positions)``."""
    if isinstance(positions, str):
        if positions not in ("each", "all", "last"):
            raise PatchingError(f"positions must be 'each', 'all', 'last' or a list of positions; got {positions!r}.")
        return positions, (list(range(width)) if positions == "each" else None)
    if isinstance(positions, int):
        positions = [positions]
    pos = [int(p) + width if int(p) < 0 else int(p) for p in positions]
    bad = [p for p in pos if not 0 <= p < width]
    if bad:
        raise PatchingError(f"Position {bad[0]} is out of range for prompts of {width} tokens.")
    return "list", pos


def _layers_spec(lm: "LM", layers: Sequence[int] | None) -> list[int]:
    return lm.indices(layers, "layer")  # None / "all" / an int / ints; out of range, empty or repeated: ComponentError


def _sanity_error(r: Result) -> float | None:
    """|effect - 1| of patching every position of the middle layer (must restore the clean run)."""
    keys = [k for k in r.diagnostics if k.startswith("sanity_all_positions_layer_")]
    return abs(float(r.diagnostics[keys[0]]) - 1.0) if keys else None


PATCHING_CHECK = CheckSpec("sanity_error", 1e-3, read=_sanity_error,
                           advice="patching the whole clean residual stream of a layer must give effect 1.")


@register("patch", family="circuit analysis", takes="pairs", cli_input="interpretlm.datasets:from_spec", result=PatchResult,
          summary="activation patching of residual stream, attention, MLP, heads, per position",
          check=PATCHING_CHECK, demo="interpretlm.circuits.demo:circuits_section", demo_order=50)
def patch(lm: "LM", clean: Prompts | Batch, corrupted: Prompts | Batch, target: TargetLike, *,
          over: str = "resid_pre", positions: str | int | Sequence[int] | None = None,
          layers: Sequence[int] | None = None, batch_size: int = 64, align: bool = False,
          engine: str = "auto") -> PatchResult:
    """Activation patching of the clean run into the corrupted run, one component at a time.

    Args:
        lm: the model.
        clean: clean prompts (a string, a list, or token ids).
        corrupted: one corrupted prompt per clean prompt, of the same token length.
        target: the metric (``il.Contrast(" Mary", " John")``, a per-row
            ``il.datasets`` target, any :class:`~interpretlm.targets.Target`).
        over: ``"resid_pre"``, ``"resid_post"``, ``"attn"``, ``"mlp"`` or ``"heads"``
            (per-head outputs, the input of the attention output projection; grouped-query
            attention needs no ungrouping).
        positions: ``"each"`` (default for residual / attn / mlp: one patch per position),
            ``"all"`` (every position at once; default for heads), ``"last"`` (each
            prompt's last token) or a list of positions.
        layers: which layers (default: all).
        batch_size: replayed rows per forward pass (each row is one patch on one prompt).
        align: align clean and corrupted prompts of different lengths at their last token
            instead of raising.
        engine: ``"auto"`` (replay from the patched block; falls back to ``"loop"`` if the
            replay does not reproduce the model), ``"replay"`` or ``"loop"`` (one full
            forward pass per patch, the way TransformerLens's patching works).

    Returns:
        :class:`PatchResult` with ``effect`` ``[layer, pos]``, ``[layer]``, ``[layer, head]``
        or ``[layer, pos, head]``.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> p = il.patch(lm, "When Mary and John went to the store, John gave a drink to",
        ...              "When Mary and John went to the store, Mary gave a drink to",
        ...              il.Contrast(" Mary", " John"), over="resid_pre")
        >>> p.effect.shape[0] == lm.n_layers
        True
    """
    t0 = time.perf_counter()
    if over not in COMPONENTS:
        raise PatchingError(f"over must be one of {COMPONENTS}; got {over!r}.")
    if engine not in ("auto", "replay", "loop"):
        raise PatchingError(f"engine must be 'auto', 'replay' or 'loop'; got {engine!r}.")
    if positions is None:
        positions = "all" if over == "heads" else "each"
    pairs = tokenize_pairs(lm, clean, corrupted, target, align=align)
    xb = pairs.corrupted
    width = xb.input_ids.shape[1]
    kind, pos_list = _positions_spec(positions, width)
    if kind in ("each", "list") and int(xb.lengths.min()) != int(xb.lengths.max()):
        raise PatchingError(
            f"positions={positions!r} patches position by position, but the prompts have different token lengths "
            f"({sorted(set(xb.lengths.tolist()))}). Use prompts of one length (e.g. il.datasets.ioi(...) with one "
            "template), or positions='all' / 'last'.")
    layer_list = _layers_spec(lm, layers)

    runner = BlockRunner(lm, xb, pairs.target)
    sources, clean_value = _clean_sources(lm, pairs, over, layer_list, width)
    corrupt_value = float(runner.value.float().mean())
    denom, noise = normaliser(clean_value, corrupt_value, dtype=lm.dtype)

    valid = torch.ones(xb.size, width, dtype=torch.bool)
    if align:
        valid = sources["valid"]
    real = xb.attention_mask.bool() & valid

    def mask_for(p: int | None) -> torch.Tensor:
        if kind == "last":
            m = torch.zeros_like(real)
            m[torch.arange(xb.size), xb.last_index] = True
            return m & real
        if p is None:
            return real.clone()
        m = torch.zeros_like(real)
        m[:, p] = True
        return m & real

    pos_axis = pos_list if kind in ("each", "list") else [None]
    heads_axis = list(range(lm.n_heads)) if over == "heads" else [None]
    patches = [Patch(l, over, mask_for(p), None if h is None else (h,))
               for l in layer_list for p in pos_axis for h in heads_axis]
    # Point 3 of the sanity checks, measured on every run: the clean residual stream at every
    # position of one layer restores the clean metric exactly.
    mid = layer_list[len(layer_list) // 2]
    sanity_patch = Patch(mid, "resid_pre", real.clone())

    def source(comp: str, layer: int) -> torch.Tensor:
        return sources[(comp, layer)]

    own = _own_values(lm, xb, over, layer_list)

    values, used, passes = run_patches(runner, patches + [sanity_patch], source, engine=engine,
                                       batch_size=batch_size, base=(lambda c, l: own.get((c, l))) if own else None)
    passes += xb.size * (1 + bool(own))  # the clean run (and the corrupted run's own values)
    mean = values.mean(dim=1)
    effect = ((mean - corrupt_value) / denom)
    sanity_full = float(effect[-1])
    effect, patched = effect[:-1], mean[:-1]
    shape = [len(layer_list)] + ([len(pos_axis)] if kind in ("each", "list") else []) + \
            ([lm.n_heads] if over == "heads" else [])
    axes = ["layer"] + (["pos"] if kind in ("each", "list") else []) + (["head"] if over == "heads" else [])
    diagnostics = {
        "engine": used, "replay_check_error": runner.check_error,
        # patching nothing: the replay of the corrupted run from block 0
        "sanity_nothing_patched": (float(runner.replay_value.float().mean()) - corrupt_value) / denom,
        f"sanity_all_positions_layer_{mid}": sanity_full,
        "forward_passes": float(passes), "patches": len(patches), "seconds": time.perf_counter() - t0,
    }
    if abs(sanity_full - 1.0) > 1e-3:
        msg = (f"Sanity check failed: patching the clean residual stream at every position of layer {mid} gave "
               f"effect {sanity_full:.4f}, not 1.0; the patching results are not trustworthy.")
        warnings.warn(msg, CheckWarning)
    result = PatchResult(
        model=lm.name, method=f"activation patching ({over})", target=pairs.target.to_dict(), policy=xb.policy,
        diagnostics=diagnostics, effect=effect.view(shape), patched=patched.view(shape), axes=axes,
        layers=layer_list, positions=pos_list if kind in ("each", "list") else kind,
        tokens=list(xb.tokens[0]), clean_tokens=list(pairs.clean.tokens[0]), over=over,
        clean_value=clean_value, corrupt_value=corrupt_value, n_prompts=xb.size)
    if noise:
        result.warn(noise, NoiseWarning)
    return result


def _clean_sources(lm: "LM", pairs, over: str, layers: list[int], width: int) -> tuple[dict, float]:
    """Clean activations of ``over`` (and ``resid_pre`` for the sanity check) on corrupted positions."""
    comps = {over, "resid_pre"}
    names = {}
    for l in set(layers) | {layers[len(layers) // 2]}:
        for c in comps:
            names[(c, l)] = f"blocks.{l}.attn.heads" if c == "heads" else f"blocks.{l}.{c}"
    with torch.no_grad(), lm.capture(sorted(set(names.values()))) as cache:
        out = lm.forward(pairs.clean, grad=False)
    clean_value = float(pairs.target(out).float().mean())
    sources: dict[Any, torch.Tensor] = {}
    valid = None
    for key, name in names.items():
        act, valid = shifted(cache[name], pairs.shift, width)
        sources[key] = act
    sources["valid"] = valid
    return sources, clean_value


def _own_values(lm: "LM", batch: Batch, over: str, layers: list[int]) -> dict[tuple[str, int], torch.Tensor]:
    """The corrupted run's own values of ``over`` per ``(component, layer)`` (none for the residual
    stream, which the replay already holds): where a clean value equals it, a patch changes nothing."""
    if over in ("resid_pre", "resid_post"):
        return {}
    names = {l: f"blocks.{l}.attn.heads" if over == "heads" else f"blocks.{l}.{over}" for l in layers}
    with torch.no_grad(), lm.capture(sorted(set(names.values()))) as cache:
        lm.forward(batch, grad=False)
    return {(over, l): cache[name] for l, name in names.items()}


def run_patches(runner: BlockRunner, patches: list[Patch], source, *, engine: str = "auto", batch_size: int = 64,
                progress: bool | None = None, desc: str = "patching", base=None) -> tuple[torch.Tensor, str, float]:
    """The target after each patch, ``[patches, batch]``, with the engine that computed it and its cost
    in forward passes of one row.

    ``engine="auto"`` replays from the patched block when the replay reproduces the model's forward pass
    (``runner.check_error``), else warns and runs one full forward pass per patch. ``base`` gives the base
    run's own values of a ``(component, layer)``, as :func:`~interpretlm.circuits.sweep.sweep` takes them.
    """
    lm, batch = runner.lm, runner.batch
    ok = runner.check_error <= CHECK_TOL * (1 + float(runner.value.abs().max()))
    if engine == "replay" or (engine == "auto" and ok):
        values = sweep(runner, patches, source, batch_size=batch_size, progress=progress, desc=desc, base=base)
        return values, "replay", runner.passes
    if engine == "auto":
        warnings.warn(f"Replaying {lm.name} block by block differs from its forward pass by "
                      f"{runner.check_error:.2g}; running one full forward pass per patch instead.")
    values = loop_sweep(lm, batch, runner.target, patches, source, batch_size=batch_size, progress=progress)
    return values, "loop", float(batch.size * (2 + len(patches)))


def loop_sweep(lm: "LM", batch: Batch, target, patches: list[Patch], source, *, batch_size: int = 64,
               progress: bool | None = None) -> torch.Tensor:
    """Reference engine: one full forward pass of the corrupted batch per patch, ``[patches, batch]``."""
    out = torch.empty(len(patches), batch.size)
    for s, p in enumerate(track(patches, "patching (loop)", progress)):
        value = source(p.component, p.layer)
        m = p.pos_mask
        if p.component == "heads":
            hm = torch.zeros(lm.n_heads, dtype=torch.bool)
            hm[list(p.heads) if p.heads is not None else slice(None)] = True
            m = m[:, :, None] & hm[None, None, :]
        name = f"blocks.{p.layer}.attn.heads" if p.component == "heads" else f"blocks.{p.layer}.{p.component}"

        def edit(x: torch.Tensor, m: torch.Tensor = m, value: torch.Tensor = value) -> torch.Tensor:
            return torch.where(m.unsqueeze(-1).to(x.device), value.to(x.device, x.dtype), x)

        with torch.no_grad(), lm.intervene({name: edit}):
            vals = []
            for start in range(0, batch.size, batch_size):
                chunk = batch.rows(start, start + batch_size)
                vals.append(target(lm.forward(chunk, grad=False)).float().cpu())
        out[s] = torch.cat(vals)
    return out
