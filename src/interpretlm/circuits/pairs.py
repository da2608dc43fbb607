"""Clean / corrupted prompt pairs: tokenization, length checks and the metric baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..targets import Target, TargetLike, as_target
from ..tokens import Batch, Prompts
from .sweep import PatchingError

if TYPE_CHECKING:
    from ..model import LM


@dataclass
class PromptPairs:
    """Tokenized clean and corrupted prompts, prepared for one target.

    Attributes:
        clean, corrupted: the two batches (same number of rows; same token length per row
            unless ``shift`` aligns them).
        target: the prepared target.
        shift: ``[batch]`` clean position minus corrupted position of the same token
            (non-zero only with ``align=True``).
    """

    clean: Batch
    corrupted: Batch
    target: Target
    shift: torch.Tensor


def tokenize_pairs(lm: "LM", clean: Prompts | Batch, corrupted: Prompts | Batch, target: TargetLike, *,
                   align: bool = False) -> PromptPairs:
    """Tokenize and check clean / corrupted prompts for patching.

    Raises :class:`PatchingError` when the counts differ, or when a clean and a corrupted
    prompt have different token lengths and ``align`` is False.
    """
    tgt = as_target(target, lm)
    cb = tgt.prepare(lm, lm.tokenize(clean))
    xb = tgt.prepare(lm, lm.tokenize(corrupted))
    if cb.size != xb.size:
        raise PatchingError(f"{cb.size} clean prompts but {xb.size} corrupted ones: give one corrupted prompt "
                            "for each clean prompt.")
    lc, lx = cb.lengths, xb.lengths
    bad = (lc != lx).nonzero().flatten().tolist()
    if bad and not align:
        i = bad[0]
        raise PatchingError(
            f"Clean prompt {i} is {int(lc[i])} tokens but its corrupted prompt is {int(lx[i])} tokens "
            f"({cb.tokens[i]} vs {xb.tokens[i]}). Patching compares the two position by position: make them "
            "the same length (e.g. swap single-token names), or pass align=True to align them at their "
            "last token (positions with no counterpart are not patched).")
    return PromptPairs(cb, xb, tgt, (lc - lx).long())


def shifted(clean_act: torch.Tensor, shift: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean activations moved onto corrupted positions: ``([batch, width, ...], valid [batch, width])``.

    Row ``b``'s corrupted position ``p`` takes the clean value at ``p + shift[b]``.
    """
    b = clean_act.shape[0]
    pos = torch.arange(width).unsqueeze(0) + shift.unsqueeze(1)  # [batch, width]
    valid = (pos >= 0) & (pos < clean_act.shape[1])
    idx = pos.clamp(0, clean_act.shape[1] - 1).to(clean_act.device)
    gather = idx.view(b, width, *([1] * (clean_act.dim() - 2))).expand(b, width, *clean_act.shape[2:])
    return clean_act.gather(1, gather), valid


def check_denominator(clean_value: float, corrupt_value: float) -> float:
    """``clean - corrupt``; raise :class:`PatchingError` when it is (numerically) zero."""
    diff = clean_value - corrupt_value
    if not (math.isfinite(clean_value) and math.isfinite(corrupt_value)):
        raise PatchingError(
            f"The metric is not finite on the {'clean' if not math.isfinite(clean_value) else 'corrupted'} prompts "
            f"(clean {clean_value:.6g}, corrupted {corrupt_value:.6g}): the model's output holds NaN/inf, so no "
            "effect can be normalised. Look for an intervention (lm.intervene) or a dtype that overflows "
            "(load in float32).")
    if not abs(diff) > 1e-6 * max(1.0, abs(clean_value), abs(corrupt_value)):
        raise PatchingError(
            f"The metric is the same on clean ({clean_value:.6g}) and corrupted ({corrupt_value:.6g}) prompts, "
            "so (patched - corrupted) / (clean - corrupted) is undefined. Pick a corruption that changes the "
            "answer (e.g. swap the names the answer depends on) or a target that tells the two apart "
            "(e.g. il.Contrast(right, wrong)).")
    return diff
