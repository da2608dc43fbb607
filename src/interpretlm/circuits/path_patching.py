"""Path patching (Wang et al., 2022; Goldowsky-Dill et al., 2023): the effect of a sender
through one path only.

For each receiver R (a later head, an MLP, or the logits), the clean value of the senders
reaches R only along direct residual paths:

1. run the corrupted prompts with the senders set to their clean values and every other
   head and MLP frozen at its corrupted value, and record what each receiver computes
   (it sees the senders' clean output and nothing else new);
2. run the corrupted prompts again with only R set to that recorded value, everything
   downstream free, and read the target.

``effect = (patched - corrupted) / (clean - corrupted)``, as in :func:`~interpretlm.circuits.patch`.
Step 2 is one batched replay from R's block for all receivers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..errors import ComponentError
from ..registry import CheckSpec, register
from ..targets import TargetLike
from ..tokens import Prompts
from .metric import NoiseWarning, normaliser
from .pairs import tokenize_pairs
from .patching import PatchResult, run_patches
from .runner import BlockRunner
from .sweep import Patch, PatchingError

if TYPE_CHECKING:
    from ..model import LM


@dataclass(kw_only=True)
class PathPatchResult(PatchResult):
    """A :class:`PatchResult` for paths: ``effect[layer, head]`` (or ``[layer]``, or ``[1]`` for
    logits) is the effect of the senders through that receiver alone; NaN where a receiver
    cannot receive (not after a sender)."""

    senders: list[str] = field(default_factory=list)
    receivers: Any = "heads"

    nan_marks: ClassVar[tuple[str, ...]] = ("effect",)  # receivers that cannot receive


def _parse_senders(lm: "LM", senders: Sequence[Any]) -> tuple[list[tuple[int, int]], list[int]]:
    heads, mlps = [], []
    for s in senders:
        if isinstance(s, (tuple, list)) and len(s) == 2 and s[1] == "mlp":
            lm.check_heads(int(s[0]))
            mlps.append(int(s[0]))
        elif isinstance(s, (tuple, list)) and len(s) == 2:
            lm.check_heads(int(s[0]), [int(s[1])])
            heads.append((int(s[0]), int(s[1])))
        else:
            raise ComponentError(f"Senders are (layer, head) pairs or (layer, 'mlp'); got {s!r}.")
    if not heads and not mlps:
        raise ComponentError("Give at least one sender, e.g. senders=[(9, 6)].")
    return heads, mlps


@register("path_patch", family="circuit analysis", takes="pairs", cli_input="interpretlm.datasets:from_spec", result=PathPatchResult,
          summary="path patching from sender heads / MLPs to each receiver",
          check=CheckSpec("replay_check_error", 1e-3, advice="the batched replay disagrees with the model's forward pass."))
def path_patch(lm: "LM", clean: Prompts, corrupted: Prompts, target: TargetLike, *,
               senders: Sequence[Any], receivers: str | Sequence[Any] = "heads", batch_size: int = 64) -> PathPatchResult:
    """Path patching from ``senders`` to each receiver.

    Args:
        lm, clean, corrupted, target: as :func:`~interpretlm.circuits.patch`.
        senders: ``[(layer, head), ...]`` and/or ``[(layer, "mlp")]``, patched to clean together.
        receivers: ``"heads"`` (every head after the first sender: ``[layer, head]``),
            ``"mlp"`` (``[layer]``), ``"logits"`` (the direct path to the output: ``[1]``),
            or a list of ``(layer, head)``.
        batch_size: replayed rows per forward pass.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> r = il.path_patch(lm, "When Mary and John went to the store, John gave a drink to",
        ...                   "When Mary and John went to the store, Mary gave a drink to",
        ...                   il.Contrast(" Mary", " John"), senders=[(0, 1)], receivers="heads")
        >>> tuple(r.effect.shape)
        (2, 4)
    """
    t0 = time.perf_counter()
    s_heads, s_mlps = _parse_senders(lm, senders)
    first = min([l for l, _ in s_heads] + s_mlps)
    if isinstance(receivers, str):
        if receivers not in ("heads", "mlp", "logits"):
            raise PatchingError(f"receivers must be 'heads', 'mlp', 'logits' or a list of (layer, head); "
                                f"got {receivers!r}.")
        recv_heads = [(l, h) for l in range(first + 1, lm.n_layers) for h in range(lm.n_heads)] \
            if receivers == "heads" else []
        recv_mlps = list(range(first + (0 if s_heads and first not in s_mlps else 1), lm.n_layers)) \
            if receivers == "mlp" else []
    else:
        recv_heads, recv_mlps = _parse_senders(lm, receivers)
    pairs = tokenize_pairs(lm, clean, corrupted, target)
    xb, cb = pairs.corrupted, pairs.clean
    L, H = lm.n_layers, lm.n_heads
    head_names = [f"blocks.{l}.attn.heads" for l in range(L)]
    mlp_names = [f"blocks.{l}.mlp" for l in range(L)]
    with torch.no_grad():
        with lm.capture(head_names + mlp_names) as cache:
            out = lm.forward(cb, grad=False)
        clean_acts = {n: cache[n] for n in head_names + mlp_names}
        clean_value = float(pairs.target(out).float().mean())
        runner = BlockRunner(lm, xb, pairs.target)
        with lm.capture(head_names + mlp_names) as cache:
            lm.forward(xb, grad=False)
        frozen = {n: cache[n] for n in head_names + mlp_names}
    corrupt_value = float(runner.value.float().mean())
    denom, noise = normaliser(clean_value, corrupt_value, dtype=lm.dtype)

    # step 1: senders clean, everything else frozen at corrupted; record what receivers compute
    recorded: dict[str, torch.Tensor] = {}
    edits = {}
    for l in range(L):
        hmask = torch.zeros(H, dtype=torch.bool)
        hmask[[h for sl, h in s_heads if sl == l]] = True

        def head_edit(x, l=l, hmask=hmask):
            recorded[head_names[l]] = x.detach().clone()
            m = hmask.view(1, 1, H, 1).to(x.device)
            return torch.where(m, clean_acts[head_names[l]].to(x.dtype), frozen[head_names[l]].to(x.dtype))

        def mlp_edit(x, l=l):
            recorded[mlp_names[l]] = x.detach().clone()
            src = clean_acts if l in s_mlps else frozen
            return src[mlp_names[l]].to(x.dtype)

        edits[head_names[l]] = head_edit
        edits[mlp_names[l]] = mlp_edit
    with torch.no_grad(), lm.intervene(edits):
        direct = float(pairs.target(lm.forward(xb, grad=False)).float().mean())

    # step 2: each receiver alone set to its recorded value, replayed from its block
    real = xb.attention_mask.bool()
    if receivers == "logits":
        effect = torch.tensor([(direct - corrupt_value) / denom])
        axes, shape = ["logits"], (1,)
        passes = runner.passes + 3 * xb.size
    else:
        patches = [Patch(l, "heads", real, (h,)) for l, h in recv_heads] + [Patch(l, "mlp", real) for l in recv_mlps]
        vals, _, passes = run_patches(runner, patches,
                                      lambda c, l: recorded[head_names[l] if c == "heads" else mlp_names[l]],
                                      batch_size=batch_size, desc="path patching")
        eff = (vals.mean(1) - corrupt_value) / denom
        if recv_heads and not recv_mlps:
            effect = torch.full((L, H), float("nan"))
            for (l, h), e in zip(recv_heads, eff):
                effect[l, h] = e
            axes, shape = ["layer", "head"], (L, H)
        elif recv_mlps and not recv_heads:
            effect = torch.full((L,), float("nan"))
            for l, e in zip(recv_mlps, eff):
                effect[l] = e
            axes, shape = ["layer"], (L,)
        else:
            effect = eff
            axes, shape = ["receiver"], tuple(eff.shape)
        passes += 3 * xb.size
    names = [f"L{l}H{h}" for l, h in s_heads] + [f"mlp{l}" for l in s_mlps]
    result = PathPatchResult(
        model=lm.name, method="path patching", target=pairs.target.to_dict(), policy=xb.policy,
        diagnostics={"replay_check_error": runner.check_error, "direct_to_logits": (direct - corrupt_value) / denom,
                     "forward_passes": float(passes), "seconds": time.perf_counter() - t0},
        effect=effect.view(shape), axes=axes, layers=list(range(L)), positions="all", tokens=list(xb.tokens[0]),
        clean_tokens=list(cb.tokens[0]), over="heads" if recv_heads else "mlp", clean_value=clean_value,
        corrupt_value=corrupt_value, n_prompts=xb.size, senders=names,
        receivers=receivers if isinstance(receivers, str) else [list(r) for r in receivers])
    if noise:
        result.warn(noise, NoiseWarning)
    return result
