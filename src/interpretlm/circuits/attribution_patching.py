"""Attribution patching and EAP-IG: the patching grid from gradients.

Attribution patching (Nanda 2023; Syed et al. 2023) estimates the effect of patching a
component by its first-order Taylor term, ``(a_clean - a_corrupt) · d metric / d a`` at
the corrupted run: 2 forward passes (clean, corrupted) and 1 backward pass for every
layer, position and head at once. EAP-IG (Hanna et al., 2024) averages the gradient over
inputs interpolated between the corrupted and clean embeddings (``steps`` points), which
follows the metric's curvature better. Both are divided by ``clean - corrupt`` so they
are on the scale of :func:`~interpretlm.circuits.patch`'s effect.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import CheckWarning
from ..registry import CheckSpec, register
from ..targets import TargetLike
from ..tokens import Prompts
from .metric import NoiseWarning, normaliser
from .pairs import tokenize_pairs
from .patching import PatchResult, _layers_spec, _positions_spec
from ..replay import select_rows
from .sweep import COMPONENTS, PatchingError

if TYPE_CHECKING:
    from ..model import LM


def _name(comp: str, layer: int) -> str:
    return f"blocks.{layer}.attn.heads" if comp == "heads" else f"blocks.{layer}.{comp}"


def gradients(lm: "LM", batch, target, names: list[str], *, embed_from: torch.Tensor | None = None,
              embed_to: torch.Tensor | None = None, alphas: Sequence[float] = (), batch_size: int = 32
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Activations and ``d target / d activation`` of ``names`` for every row of ``batch``.

    Without ``alphas``: one forward and one backward pass. With ``alphas``, the token
    embeddings are replaced by ``embed_from + alpha * (embed_to - embed_from)`` and the
    gradients are averaged over the ``alphas`` (integrated gradients along the inputs).

    Returns:
        ``(activations, gradients, values)``: per name ``[batch, pos, ...]`` tensors (the
        activations of the un-interpolated run, or of ``alpha = alphas[0]``), and the target
        ``[batch]`` (per alpha ``[len(alphas), batch]`` when interpolating).
    """
    steps = list(alphas) or [None]
    n = batch.size
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {k: 0 for k in names}  # type: ignore[misc]
    values = torch.zeros(len(steps), n)
    rows_all = [(k, b) for k in range(len(steps)) for b in range(n)]
    for c in range(0, len(rows_all), batch_size):
        chunk = rows_all[c:c + batch_size]
        rows = torch.tensor([b for _, b in chunk])
        sub = select_rows(batch, rows)
        edits = {}
        if alphas:
            a = torch.tensor([steps[k] for k, _ in chunk]).view(-1, 1, 1)
            mixed = embed_from[rows] + a * (embed_to[rows] - embed_from[rows])
            edits["embed"] = lambda x, mixed=mixed: mixed.to(x.device, x.dtype)
        with torch.enable_grad(), lm.intervene(edits), lm.capture(names, grad=True) as cache:
            out = lm.forward(sub, grad=True)
            v = target(out)
            got = torch.autograd.grad(v.sum(), [cache[k] for k in names], allow_unused=True)
        for (k, b), val in zip(chunk, v.detach().float().cpu()):
            values[k, b] = val
        for name, g in zip(names, got):
            g = torch.zeros_like(cache[name]) if g is None else g
            # sum over alphas, row by row (rows of one chunk may repeat a prompt at several alphas)
            if not isinstance(grads[name], torch.Tensor):
                grads[name] = torch.zeros(n, *g.shape[1:], dtype=torch.float32)
                acts[name] = torch.zeros(n, *g.shape[1:], dtype=torch.float32)
            grads[name].index_add_(0, rows, g.detach().float().cpu())
            first = torch.tensor([k == 0 for k, _ in chunk])
            if first.any():
                acts[name][rows[first]] = cache[name].detach().float().cpu()[first]
    for name in names:
        grads[name] = grads[name] / len(steps)
    return acts, grads, (values if alphas else values[0])


@register("attribution_patch", family="circuit analysis", takes="pairs", cli_input="interpretlm.datasets:from_spec",
          result=PatchResult, summary="attribution patching (first-order) and EAP-IG estimates of every patch",
          # EAP-IG must add up to the full effect within 10%; the first-order estimate is only
          # expected to get its size right (within 100%)
          check=CheckSpec("completeness_error", 0.1,
                          threshold_of=lambda r: 1.0 if r.options.get("estimator") == "attribution" else 0.1,
                          advice="raise steps (EAP-IG) or use il.patch."))
def attribution_patch(lm: "LM", clean: Prompts, corrupted: Prompts, target: TargetLike, *,
                      over: str = "resid_pre", positions: str | int | Sequence[int] | None = None,
                      layers: Sequence[int] | None = None, estimator: str = "attribution", steps: int = 5,
                      batch_size: int = 32) -> PatchResult:
    """Estimate the activation-patching grid from gradients (attribution patching / EAP-IG).

    Args:
        lm, clean, corrupted, target, over, positions, layers: as :func:`~interpretlm.circuits.patch`.
        estimator: ``"attribution"`` (2 forward + 1 backward pass) or ``"eap_ig"``
            (gradients averaged over ``steps`` inputs interpolated from corrupted to clean).
        steps: interpolation points of EAP-IG.
        batch_size: rows per forward / backward pass.

    Returns:
        :class:`~interpretlm.circuits.PatchResult` whose ``effect`` estimates the patching
        effect; ``diagnostics["completeness_error"]`` is ``|sum over positions of the
        layer-0 residual estimate - 1|`` (0 for exact integrated gradients).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("gpt2")
        >>> a = il.attribution_patch(lm, "When Mary and John went to the store, John gave a drink to",
        ...                          "When Mary and John went to the store, Mary gave a drink to",
        ...                          il.Contrast(" Mary", " John"), over="heads")
        >>> tuple(a.effect.shape) == (lm.n_layers, lm.n_heads)
        True
    """
    t0 = time.perf_counter()
    if over not in COMPONENTS:
        raise PatchingError(f"over must be one of {COMPONENTS}; got {over!r}.")
    if estimator not in ("attribution", "eap_ig"):
        raise PatchingError(f"estimator must be 'attribution' or 'eap_ig'; got {estimator!r}.")
    if estimator == "eap_ig" and steps < 1:
        raise PatchingError(f"steps must be at least 1; got {steps}.")
    if positions is None:
        positions = "all" if over == "heads" else "each"
    pairs = tokenize_pairs(lm, clean, corrupted, target)
    xb, cb = pairs.corrupted, pairs.clean
    width = xb.input_ids.shape[1]
    kind, pos_list = _positions_spec(positions, width)
    if kind in ("each", "list") and int(xb.lengths.min()) != int(xb.lengths.max()):
        raise PatchingError(f"positions={positions!r} needs prompts of one token length; got "
                            f"{sorted(set(xb.lengths.tolist()))}. Use positions='all' or 'last'.")
    layer_list = _layers_spec(lm, layers)
    names = [_name(over, l) for l in layer_list]
    check = "blocks.0.resid_pre"
    all_names = names + ([check] if check not in names else [])
    with torch.no_grad(), lm.capture(all_names + ["embed"]) as cache:
        out = lm.forward(cb, grad=False)
    clean_acts = {k: cache[k].float().cpu() for k in all_names}
    clean_embed = cache["embed"]
    clean_value = float(pairs.target(out).float().mean())
    if estimator == "attribution":
        acts, grads, vals = gradients(lm, xb, pairs.target, all_names, batch_size=batch_size)
        corrupt_value = float(vals.mean())
        fwd, bwd = 2 * xb.size, xb.size
    else:
        with torch.no_grad(), lm.capture(all_names + ["embed"]) as c2:
            xo = lm.forward(xb, grad=False)
        acts = {k: c2[k].float().cpu() for k in all_names}
        corrupt_value = float(pairs.target(xo).float().mean())
        alphas = [(k + 0.5) / steps for k in range(steps)]  # midpoint rule
        _, grads, vals = gradients(lm, xb, pairs.target, all_names, embed_from=c2["embed"],
                                   embed_to=clean_embed, alphas=alphas, batch_size=batch_size)
        fwd, bwd = (2 + steps) * xb.size, steps * xb.size
    denom, noise = normaliser(clean_value, corrupt_value, dtype=lm.dtype)
    real = xb.attention_mask.bool()

    def estimate(name: str) -> torch.Tensor:
        """``[pos]`` or ``[pos, head]`` mean over prompts of ``delta · grad``."""
        contrib = ((clean_acts[name] - acts[name]) * grads[name]).sum(-1)  # [batch, pos(, head)]
        m = real.view(*real.shape, *([1] * (contrib.dim() - 2))).float()
        return (contrib * m).mean(0) / denom

    grid = []
    for name in names:
        e = estimate(name)
        if kind == "each":
            pass
        elif kind == "list":
            e = e[pos_list]
        elif kind == "all":
            e = e.sum(0)
        else:  # last: each prompt's last token
            contrib = ((clean_acts[name] - acts[name]) * grads[name]).sum(-1)
            e = contrib[torch.arange(xb.size), xb.last_index].mean(0) / denom
        grid.append(e)
    effect = torch.stack(grid)
    completeness = abs(float(estimate(check).sum()) - 1.0)
    axes = ["layer"] + (["pos"] if kind in ("each", "list") else []) + (["head"] if over == "heads" else [])
    label = "attribution patching" if estimator == "attribution" else f"EAP-IG ({steps} steps)"
    diagnostics: dict[str, Any] = {"forward_passes": fwd, "backward_passes": bwd, "completeness_error": completeness,
                                   "seconds": time.perf_counter() - t0}
    if estimator == "eap_ig" and completeness > 0.1:
        msg = (f"EAP-IG completeness error {completeness:.2f}: the layer-0 estimates do not add up to the full "
               f"effect; raise steps (now {steps}).")
        warnings.warn(msg, CheckWarning)
    result = PatchResult(
        model=lm.name, method=f"{label} ({over})", target=pairs.target.to_dict(), policy=xb.policy,
        diagnostics=diagnostics, effect=effect, patched=None, axes=axes, layers=layer_list,
        positions=pos_list if kind in ("each", "list") else kind, tokens=list(xb.tokens[0]),
        clean_tokens=list(cb.tokens[0]), over=over, clean_value=clean_value, corrupt_value=corrupt_value,
        n_prompts=xb.size)
    if noise:
        result.warn(noise, NoiseWarning)
    return result
