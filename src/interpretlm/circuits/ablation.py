"""Ablation experiments: knock out heads or MLPs and measure what the target loses.

``il.ablate(lm, prompts, target, heads=[(9, 6)], kind="mean")`` replaces the chosen
components together by zeros, their mean over the prompts (or ``reference`` prompts), or
their value on another prompt (resample), and reports the target before and after.
``heads="each"`` / ``mlps="each"`` ablate every head / MLP on its own instead, batched
with the replay engine: ``effect`` is then a ``[layer, head]`` / ``[layer]`` grid.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ComponentError, InterpretLMWarning
from ..registry import CheckSpec, register
from ..results import Result
from ..targets import TargetLike, as_target
from ..tokens import Prompts
from ..viz.html import target_text
from ..viz.figures import Figure, Heatmap, Table
from .runner import BlockRunner
from .patching import run_patches
from .sweep import Patch, PatchingError

if TYPE_CHECKING:
    from ..model import LM

KINDS = ("zero", "mean", "resample")


@dataclass(kw_only=True)
class AblationResult(Result):
    """What ablating components does to the target.

    Attributes:
        kind: ``zero``, ``mean`` or ``resample``.
        components: the ablated components (``"L9H6"``, ``"mlp3"``), or ``"each head"`` /
            ``"each mlp"`` for sweeps.
        clean_value: target mean over prompts without ablation.
        ablated_value: target mean with the components ablated (sweeps: the grid).
        effect: ``ablated - clean`` (a scalar, or ``[layer, head]`` / ``[layer]`` for sweeps).
        per_prompt: ``[prompts]`` ablated target per prompt (joint ablation).
        axes: axes of ``effect`` for sweeps.
    """

    kind: str = "zero"
    components: list[str] = field(default_factory=list)
    clean_value: float = 0.0
    ablated_value: Any = None
    effect: Any = None
    per_prompt: Any = None
    axes: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` components whose ablation changes the target most (sweeps)."""
        e = np.asarray(self.effect, dtype=float)
        if e.ndim == 0:
            return [(", ".join(self.components), float(e))]
        order = np.argsort(-np.abs(e).ravel())[:k]
        out = []
        for f in order:
            idx = np.unravel_index(f, e.shape)
            lab = f"L{self.layers[idx[0]]}" + (f"H{idx[1]}" if len(idx) > 1 else " mlp")
            out.append((lab, float(e[idx])))
        return out

    def summary(self) -> str:
        e = np.asarray(self.effect, dtype=float)
        if e.ndim == 0:
            return (f"model {self.model} · {self.kind}-ablating {', '.join(self.components)}: target "
                    f"{self.clean_value:.3f} -> {float(np.asarray(self.ablated_value)):.3f} ({float(e):+.3f})")
        top = ", ".join(f"{l} {v:+.2f}" for l, v in self.top(3))
        return f"model {self.model} · {self.kind} ablation of {', '.join(self.components)} · clean {self.clean_value:.3f} · top {top}"

    def figures(self) -> dict[str, Figure]:
        """``"ablation"`` (a table: target before and after) for a joint ablation; ``"effect"``
        (a :class:`Heatmap` of the change, rows: layers) for sweeps."""
        e = np.asarray(self.effect, dtype=float)
        if e.ndim == 0:
            return {"ablation": Table(["ablated", "kind", "clean", "ablated", "change"],
                                      [(", ".join(self.components), self.kind, self.clean_value,
                                        float(np.asarray(self.ablated_value)), float(e))])}
        rows = [f"L{l}" for l in self.layers]
        if e.ndim == 1:
            return {"effect": Heatmap(rows, ["mlp"], e[:, None].tolist(), label="change",
                                      unit=f"ablated − clean {target_text(self.target)}")}
        return {"effect": Heatmap(rows, [f"H{h}" for h in range(e.shape[1])], e.tolist(), label="change",
                                  unit=f"ablated − clean {target_text(self.target)}")}


def _parse_heads(lm: "LM", heads: Any) -> list[tuple[int, int]]:
    if heads is not None and not isinstance(heads, (list, tuple)):
        raise ComponentError(f"heads= is a list of (layer, head) pairs, e.g. heads=[(9, 6)], or 'each'; got {heads!r:.40}.")
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
        heads = [heads]  # one (layer, head) pair
    out = []
    for item in heads or []:
        try:
            layer, head = (int(item[0]), int(item[1]))
        except (TypeError, ValueError, IndexError):
            raise ComponentError(f"Heads are (layer, head) pairs, e.g. heads=[(9, 6)]; got {item!r}.") from None
        lm.check_heads(layer, [head])
        out.append((layer, head))
    return out


def _parse_mlps(lm: "LM", mlps: Any) -> list[int]:
    return [] if mlps is None or (isinstance(mlps, (list, tuple)) and not mlps) else lm.indices(mlps, "layer")


def ablation_sources(lm: "LM", batch, names: list[str], kind: str, *, reference: Prompts | None = None,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """Per name, the ``[batch, pos, ...]`` values an ablation writes (zeros, means or resampled)."""
    with torch.no_grad(), lm.capture(names) as cache:
        lm.forward(batch, grad=False)
    acts = {n: cache[n] for n in names}
    if kind == "zero":
        return {n: torch.zeros_like(a) for n, a in acts.items()}
    ref_acts = acts
    ref_batch = batch
    if reference is not None:
        ref_batch = lm.tokenize(reference)
        with torch.no_grad(), lm.capture(names) as cache:
            lm.forward(ref_batch, grad=False)
        ref_acts = {n: cache[n] for n in names}
    same_len = int(ref_batch.lengths.min()) == int(ref_batch.lengths.max()) == int(batch.lengths.max()) \
        and int(batch.lengths.min()) == int(batch.lengths.max())
    if kind == "mean":
        out = {}
        m = ref_batch.attention_mask.bool()
        for n, a in ref_acts.items():
            w = m.view(*m.shape, *([1] * (a.dim() - 2))).to(a.dtype)
            if same_len:
                mu = (a * w).sum(0, keepdim=True) / w.sum(0, keepdim=True)  # one mean per position
            else:
                mu = ((a * w).sum((0, 1), keepdim=True) / w.sum((0, 1), keepdim=True))
            out[n] = mu.expand_as(acts[n]).contiguous()
        return out
    # resample: another prompt's activation at the same position
    if not same_len:
        raise PatchingError("Resample ablation takes each position's value from another prompt, so every prompt "
                            "(and reference prompt) must have the same token length; use kind='mean' otherwise.")
    g = torch.Generator().manual_seed(seed)
    b, r = batch.size, ref_batch.size
    if reference is None:
        if b < 2:
            raise PatchingError("Resample ablation needs at least 2 prompts (each takes another's activations), "
                                "or reference= prompts to draw from.")
        idx = (torch.arange(b) + torch.randint(1, b, (b,), generator=g)) % b  # never the prompt itself
    else:
        idx = torch.randint(0, r, (b,), generator=g)
    return {n: a[idx.to(a.device)] for n, a in ref_acts.items()}


@register("ablate", family="circuit analysis", takes="dataset", result=AblationResult,
          summary="zero / mean / resample ablation of heads and MLPs",
          check=CheckSpec("check_error", 1e-3, read=lambda r: r.diagnostics.get(
              "replay_check_error", r.diagnostics.get("edit_check_error")),
              advice="the ablated values are not what the model ran with (replay or edit mismatch)."))
def ablate(lm: "LM", prompts: Prompts, target: TargetLike, *, heads: Any = None, mlps: Any = None,
           kind: str = "zero", reference: Prompts | None = None, seed: int = 0, batch_size: int = 64) -> AblationResult:
    """Ablate heads and/or MLPs and measure the target.

    Args:
        lm: the model.
        prompts: the prompts (a string, list or token ids).
        target: the metric (``il.NextToken``, ``il.Contrast``, a dataset's target...).
        heads: ``[(layer, head), ...]`` ablated together, or ``"each"`` (every head alone:
            a ``[layer, head]`` sweep). Heads are the per-head outputs entering the
            attention output projection, so grouped-query attention is handled as is.
        mlps: ``[layer, ...]`` MLP outputs ablated together, or ``"each"``.
        kind: ``"zero"``, ``"mean"`` (mean over the prompts or ``reference``, per position
            when all have one length) or ``"resample"`` (another prompt's value).
        reference: prompts to take means / resamples from (default: ``prompts``).
        seed: the resample draw.
        batch_size: rows per forward pass for sweeps.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> r = il.ablate(lm, "When Mary and John went to the store, John gave a drink to",
        ...               il.Contrast(" Mary", " John"), heads=[(1, 2)], kind="zero")
        >>> r.effect.shape
        torch.Size([])
    """
    t0 = time.perf_counter()
    if kind not in KINDS:
        raise PatchingError(f"kind must be one of {KINDS}; got {kind!r}.")
    tgt = as_target(target, lm)
    batch = tgt.prepare(lm, lm.tokenize(prompts))
    sweep_heads, sweep_mlps = heads == "each", mlps == "each"
    if sweep_heads or sweep_mlps:
        if (heads is not None and not sweep_heads) or (mlps is not None and not sweep_mlps) or (sweep_heads and sweep_mlps):
            raise PatchingError("Sweep one kind of component at a time: heads='each' or mlps='each', alone.")
        comp = "heads" if sweep_heads else "mlp"
        names = [f"blocks.{l}.attn.heads" if comp == "heads" else f"blocks.{l}.mlp" for l in range(lm.n_layers)]
        src = ablation_sources(lm, batch, names, kind, reference=reference, seed=seed)
        runner = BlockRunner(lm, batch, tgt)
        real = batch.attention_mask.bool()
        if comp == "heads":
            patches = [Patch(l, "heads", real, (h,)) for l in range(lm.n_layers) for h in range(lm.n_heads)]
            shape, axes = (lm.n_layers, lm.n_heads), ["layer", "head"]
        else:
            patches = [Patch(l, "mlp", real) for l in range(lm.n_layers)]
            shape, axes = (lm.n_layers,), ["layer"]
        vals, used, passes = run_patches(runner, patches, lambda c, l: src[names[l]], batch_size=batch_size,
                                         desc="ablating")
        clean_value = float(runner.value.float().mean())
        ablated = vals.mean(1).view(shape)
        return AblationResult(
            model=lm.name, method=f"{kind} ablation sweep", target=tgt.to_dict(), policy=batch.policy,
            diagnostics={"engine": used, "replay_check_error": runner.check_error, "forward_passes": passes,
                         "seconds": time.perf_counter() - t0},
            kind=kind, components=[f"each {'head' if comp == 'heads' else 'mlp'}"], clean_value=clean_value,
            ablated_value=ablated, effect=ablated - clean_value, axes=axes, layers=list(range(lm.n_layers)))
    head_list, mlp_list = _parse_heads(lm, heads), _parse_mlps(lm, mlps)
    if not head_list and not mlp_list:
        raise PatchingError("Nothing to ablate: give heads=[(layer, head), ...], mlps=[layer, ...] or 'each'.")
    names = sorted({f"blocks.{l}.attn.heads" for l, _ in head_list} | {f"blocks.{l}.mlp" for l in mlp_list})
    src = ablation_sources(lm, batch, names, kind, reference=reference, seed=seed)
    edits = {}
    for name in names:
        layer = int(name.split(".")[1])
        if name.endswith("heads"):
            hs = [h for l, h in head_list if l == layer]
            mask = torch.zeros(lm.n_heads, dtype=torch.bool)
            mask[hs] = True
            m = mask.view(1, 1, -1, 1)
        else:
            m = torch.ones(1, 1, 1, dtype=torch.bool)
        edits[name] = (lambda x, m=m, v=src[name]: torch.where(m.to(x.device), v.to(x.device, x.dtype), x))
    with torch.no_grad():
        clean = tgt(lm.forward(batch, grad=False)).float().cpu()
        with lm.intervene(edits), lm.capture(names) as seen:
            ablated = tgt(lm.forward(batch, grad=False)).float().cpu()
        # the edits are idempotent, so a value they left in place is unchanged by a second application
        edit_error = max(float((seen[n] - edits[n](seen[n])).abs().max()) for n in names)
    comps = [f"L{l}H{h}" for l, h in head_list] + [f"mlp{l}" for l in mlp_list]
    diagnostics: dict[str, Any] = {"forward_passes": 3 * batch.size + (batch.size if reference is not None else 0),
                                   "edit_check_error": edit_error, "seconds": time.perf_counter() - t0}
    if kind == "resample" and batch.size < 2 and reference is None:
        warnings.warn("Resampling from a single prompt.", InterpretLMWarning)
    return AblationResult(
        model=lm.name, method=f"{kind} ablation", target=tgt.to_dict(), policy=batch.policy, diagnostics=diagnostics,
        kind=kind, components=comps, clean_value=float(clean.mean()), ablated_value=ablated.mean(),
        effect=ablated.mean() - clean.mean(), per_prompt=ablated, layers=sorted({l for l, _ in head_list} | set(mlp_list)))
