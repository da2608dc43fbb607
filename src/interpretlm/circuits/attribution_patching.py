"""Attribution patching and EAP-IG: the patching grid from gradients.

Attribution patching (Nanda 2023; Syed et al. 2023) estimates the effect of patching a
component by its first-order Taylor term, ``(a_clean - a_corrupt) · d metric / d a`` at
the corrupted run: 2 forward passes (clean, corrupted) and 1 backward pass for every
layer, position and head at once. EAP-IG (Hanna et al., 2024) averages the gradient over
inputs interpolated between the corrupted and clean embeddings (``steps`` points), which
follows the metric's curvature better. Both are divided by ``clean - corrupt`` so they
are on the scale of :func:`~interpretlm.circuits.patch`'s effect.

Patching one node keeps every other node corrupted, while EAP-IG's path moves every input
token at once: where the differing tokens interact (IOI's ABC corruption, whose three names
only mean something together) the integral shares out their joint effect, which no single
patch shows, and misses. Two estimators integrate along paths closer to the patch's:
along each differing token's own input path (``eap_ig_tok``: the other tokens stay
corrupted, so a residual node at that token moves as its patch moves it), and along each
layer's own activation path (``eap_ig_act``, integrated gradients over activations as in
Marks et al. 2024 and Hanna et al. 2024: the node's layer interpolated, everything upstream
corrupted, so composition between layers is seen as patching sees it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..attention_switch import attention_inputs, repeat_kv
from ..progress import bar
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


ESTIMATORS = ("auto", "attribution", "atp_star", "eap_ig", "eap_ig_act", "eap_ig_tok")
# completeness threshold of each estimator's check: the integrated gradients (EAP-IG over the
# inputs or over each node's activation) must add up to the full effect within 10%; the
# first-order estimates (plain and AtP*, whose check node is first order in both) are only
# expected to get its size right (within 100%)
COMPLETENESS = {"auto": 0.1, "attribution": 1.0, "atp_star": 1.0, "eap_ig": 0.1, "eap_ig_act": 0.1, "eap_ig_tok": 0.1}
# grids where patching one layer's node at every position is the clean run itself, so each
# layer's row of integrated gradients over activations must add up to the whole effect
WHOLE_LAYER_IS_CLEAN = ("resid_pre", "resid_post")


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


def token_path_gradients(lm: "LM", batch, target, names: list[str], embed_from: torch.Tensor,
                         embed_to: torch.Tensor, moved: torch.Tensor, alphas: Sequence[float], *,
                         batch_size: int = 32) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """Gradients of ``names`` integrated along each differing token's own input path.

    For a residual node at a position ``p`` whose input token differs, patching it keeps
    every other position corrupted, so its gradient is averaged along the path that moves
    token ``p``'s embedding alone from ``embed_from`` to ``embed_to`` (the other tokens stay
    corrupted); at positions whose token is the same in both prompts (their change comes from
    earlier tokens) it is averaged along the path that moves every token together, as in
    EAP-IG. A prompt with one differing token has one path (the two coincide).

    Args:
        batch: the corrupted batch (``n`` rows).
        embed_from, embed_to: ``[n, pos, d_model]`` corrupted and clean token embeddings.
        moved: ``[n, pos]`` bool, the positions whose token differs.
        alphas: the interpolation points (the gradient is their mean).

    Returns:
        ``(gradients, joint, paths)``: per name the mean gradient ``[n, pos, ...]`` (own path
        at differing positions, joint path elsewhere), per name the joint path's gradient at
        every position (for the completeness check), and the number of paths (each costs
        ``len(alphas)`` forward and backward passes).
    """
    n, steps = batch.size, len(alphas)
    # one path per prompt and differing token, plus the joint one (unless it is that token's)
    paths: list[tuple[int, torch.Tensor, int | None]] = []
    for b in range(n):
        own = moved[b].nonzero().flatten().tolist()
        paths.append((b, torch.ones_like(moved[b]), own[0] if len(own) == 1 else None))
        if len(own) > 1:
            paths += [(b, torch.arange(moved.shape[1]) == p, p) for p in own]
    jobs = [(i, k) for i in range(len(paths)) for k in range(steps)]
    grads: dict[str, torch.Tensor] = {}
    joint: dict[str, torch.Tensor] = {}
    with bar(len(jobs), "IG along token paths") as progress:
        for c in range(0, len(jobs), batch_size):
            chunk = jobs[c:c + batch_size]
            rows = torch.tensor([paths[i][0] for i, _ in chunk])
            mask = torch.stack([paths[i][1] for i, _ in chunk]).unsqueeze(-1).to(embed_from.dtype)
            a = torch.tensor([alphas[k] for _, k in chunk]).view(-1, 1, 1) * mask
            start = embed_from[rows]
            mixed = start + a.to(start.device, start.dtype) * (embed_to[rows] - start)
            with torch.enable_grad(), lm.intervene({"embed": lambda x, m=mixed: m.to(x.device, x.dtype)}), \
                    lm.capture(names, grad=True) as cache:
                v = target(lm.forward(select_rows(batch, rows), grad=True))
                got = torch.autograd.grad(v.sum(), [cache[k] for k in names], allow_unused=True)
            for name, g in zip(names, got):
                g = (torch.zeros_like(cache[name]) if g is None else g).detach().float().cpu()
                if name not in grads:
                    grads[name] = torch.zeros(n, *g.shape[1:])
                    joint[name] = torch.zeros(n, *g.shape[1:])
                for r, (i, _) in enumerate(chunk):
                    b, path, own = paths[i]
                    if bool(path.all()):  # the joint path: every position that has no path of its own
                        joint[name][b] += g[r]
                        keep = ~moved[b] if own is None else torch.ones_like(moved[b])
                    else:
                        keep = path
                    grads[name][b, keep] += g[r, keep]
            progress.update(len(chunk))
    return ({k: g / steps for k, g in grads.items()}, {k: g / steps for k, g in joint.items()}, len(paths))


def node_ig_gradients(lm: "LM", batch, target, names: list[str], clean_acts: dict[str, torch.Tensor],
                      corrupt_acts: dict[str, torch.Tensor], alphas: Sequence[float], *, batch_size: int = 32
                      ) -> dict[str, torch.Tensor]:
    """``d target / d node`` averaged along each node's own path from its corrupted to its clean value.

    Integrated gradients over activations (Marks et al. 2024; Hanna et al. 2024's
    EAP-IG-activations): for each name (one layer's node) and each ``alpha``, the corrupted
    run is repeated with that node, at every position, set to ``corrupt + alpha * (clean -
    corrupt)``; everything upstream stays corrupted and everything downstream responds, as
    when that node is patched. Rows of one batch may carry different names and alphas:
    each name's edit touches only its own rows.

    Args:
        batch: the corrupted batch (``n`` rows).
        names: the nodes, ``[batch, pos, ...]`` activations each.
        clean_acts, corrupt_acts: per name, ``[n, pos, ...]`` activations of the clean and
            the corrupted run.
        alphas: the interpolation points (the gradient is their mean).

    Returns:
        per name, the mean gradient ``[n, pos, ...]`` (float32, CPU): ``len(names) *
        len(alphas) * n`` rows, forward and backward, in batches of ``batch_size``.
    """
    n, steps = batch.size, len(alphas)
    jobs = [(j, k, b) for j in range(len(names)) for k in range(steps) for b in range(n)]
    grads = {name: torch.zeros(clean_acts[name].shape, dtype=torch.float32) for name in names}
    with bar(len(jobs), "IG over activations") as progress:
        for c in range(0, len(jobs), batch_size):
            _node_ig_chunk(lm, batch, target, names, clean_acts, corrupt_acts, alphas, jobs[c:c + batch_size], grads)
            progress.update(min(batch_size, len(jobs) - c))
    return {k: g / steps for k, g in grads.items()}


def _node_ig_chunk(lm: "LM", batch, target, names: list[str], clean_acts: dict[str, torch.Tensor],
                   corrupt_acts: dict[str, torch.Tensor], alphas: Sequence[float], chunk: list[tuple[int, int, int]],
                   grads: dict[str, torch.Tensor]) -> None:
    """One batched forward and backward pass of :func:`node_ig_gradients`: ``chunk`` holds
    ``(name index, alpha index, row)`` jobs; their gradients are added into ``grads``."""
    rows = torch.tensor([b for _, _, b in chunk])
    leaves: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for j in sorted({j for j, _, _ in chunk}):
        sel = torch.tensor([i for i, (jj, _, _) in enumerate(chunk) if jj == j])
        a = torch.tensor([alphas[k] for jj, k, _ in chunk if jj == j])
        a = a.view(-1, *([1] * (clean_acts[names[j]].dim() - 1)))
        lo, hi = corrupt_acts[names[j]][rows[sel]], clean_acts[names[j]][rows[sel]]
        leaves[j] = (sel, (lo + a * (hi - lo)).requires_grad_(True))

    def edit(x: torch.Tensor, j: int) -> torch.Tensor:
        sel, leaf = leaves[j]
        # out of place, so the other rows keep the graph of the nodes below them
        return x.index_put((sel.to(x.device),), leaf.to(x.device, x.dtype))
    edits = {names[j]: (lambda x, j=j: edit(x, j)) for j in leaves}
    with torch.enable_grad(), lm.intervene(edits):
        v = target(lm.forward(select_rows(batch, rows), grad=True))
        order = sorted(leaves)
        got = torch.autograd.grad(v.sum(), [leaves[j][1] for j in order], allow_unused=True)
    for j, g in zip(order, got):
        sel, leaf = leaves[j]
        g = torch.zeros_like(leaf) if g is None else g
        grads[names[j]].index_add_(0, rows[sel], g.detach().float().cpu())


def _recording_attention(lm: "LM", store: dict[int, dict[str, Any]]):
    """An eager attention function for :meth:`LM.attention_implementation` that keeps, per
    layer, the query ``[batch, head, q, d]``, the key ``[batch, kv_head, k, d]``, the additive
    mask and the probabilities ``[batch, head, q, k]`` as graph nodes, so the QK fix can
    take gradients with respect to them and recompute the softmax with other queries/keys."""
    layer_of = {id(m): i for i, block in enumerate(lm.blocks) for m in block.modules()}

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
            raise PatchingError("AtP*'s QK fix does not cover attention logit soft-capping or attention sinks; "
                                "use estimator='attribution' or 'eap_ig'.")
        k, v, mask = attention_inputs(query, key, value, attention_mask)
        if mask is not None:
            mask = mask.float()
        elif getattr(module, "is_causal", False):
            q_len, k_len = query.shape[-2], k.shape[-2]
            mask = torch.full((q_len, k_len), float("-inf"), device=query.device).triu(k_len - q_len + 1)[None, None]
        scale = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
        scores = (query.float() @ k.float().transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1)
        store[layer_of[id(module)]] = {"q": query, "k": key, "mask": mask, "scale": scale, "A": probs}
        out = probs.to(value.dtype) @ v
        return out.transpose(1, 2).contiguous(), probs
    return attention


def _qk_exact(clean: dict[str, Any], corrupt: dict[str, Any], g_probs: torch.Tensor) -> torch.Tensor:
    """``[batch, pos]``: for each position ``p``, ``sum (A_p - A) * dM/dA`` over heads,
    queries and keys, where ``A_p`` is the attention softmax recomputed exactly with the
    query and the key at ``p`` taken from the clean run (what patching the block's input
    at ``p`` does to this layer's queries and keys) and ``A`` the corrupted run's."""
    q_x, q_c = corrupt["q"].detach().float(), clean["q"].float()
    n_rep = q_x.shape[1] // corrupt["k"].shape[1]
    k_x = repeat_kv(corrupt["k"].detach().float(), n_rep)
    k_c = repeat_kv(clean["k"].float(), n_rep)
    scale, mask, probs = corrupt["scale"], corrupt["mask"], corrupt["A"].detach()
    scores = (q_x @ k_x.transpose(-1, -2)) * scale            # [batch, head, q, k]
    col = (q_x @ k_c.transpose(-1, -2)) * scale               # query t vs the clean key at p
    row = (q_c @ k_x.transpose(-1, -2)) * scale               # the clean query at p vs key s
    diag = (q_c * k_c).sum(-1) * scale                        # clean query at p vs clean key at p
    n_pos = scores.shape[-1]
    out = torch.zeros(scores.shape[0], q_x.shape[-2])
    for p in range(q_x.shape[-2]):
        s = scores.clone()
        if p < n_pos:
            s[..., p] = col[..., p]
            r = row[..., p, :].clone()
            r[..., p] = diag[..., p]
            s[..., p, :] = r
        if mask is not None:
            s = s + mask
        delta = torch.softmax(s, dim=-1) - probs
        out[:, p] = (delta * g_probs).nan_to_num().sum((1, 2, 3)).cpu()
    return out


def atp_star_contributions(lm: "LM", xb, cb, target, names: list[str], over: str, *, graddrop: bool = True,
                           batch_size: int = 32) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor],
                                                          torch.Tensor]:
    """Per-row AtP* contributions ``delta · grad`` (+ the QK fix) of ``names``.

    The QK fix (Kramár et al. 2024) applies where a grid node is the input of a block
    (``resid_pre`` of block ``L``, ``resid_post`` = input of block ``L + 1``): there the
    patched queries and keys of that block's attention are exactly the clean run's, so the
    first-order term through them is replaced by the attention softmax recomputed exactly
    (``(A_patched - A) · dM/dA``); the value path and everything downstream stay first
    order. GradDrop runs one more backward pass per layer with the gradient through that
    layer's writes to the residual stream (``attn`` and ``mlp`` outputs) set to zero.

    Returns:
        ``(drops, clean_values, values)``: ``drops[0]`` the undropped contributions and
        ``drops[1 + l]`` those with layer ``l``'s gradient dropped, per name
        ``[batch, pos]`` (``[batch, pos, head]`` for heads); the clean and the corrupted
        target ``[batch]``.
    """
    n = xb.size
    qk_layer = {}
    for name in names:
        layer = int(name.split(".")[1])
        if over == "resid_pre":
            qk_layer[name] = layer
        elif over == "resid_post" and layer + 1 < lm.n_layers:
            qk_layer[name] = layer + 1
    drops_layers = [None] + (list(range(lm.n_layers)) if graddrop else [])
    writes = [f"blocks.{l}.{w}" for l in range(lm.n_layers) for w in ("attn", "mlp")] if graddrop else []
    drops: list[dict[str, torch.Tensor]] = [{} for _ in drops_layers]
    clean_acts: dict[str, list[torch.Tensor]] = {}
    values, clean_values = torch.zeros(n), torch.zeros(n)
    for c in range(0, n, batch_size):
        rows = torch.arange(c, min(n, c + batch_size))
        clean_store: dict[int, dict[str, Any]] = {}
        store: dict[int, dict[str, Any]] = {}
        with torch.no_grad(), lm.attention_implementation(_recording_attention(lm, clean_store)), \
                lm.capture(names) as cache:
            clean_values[rows] = target(lm.forward(select_rows(cb, rows), grad=False)).float().cpu()
        for name in names:
            clean_acts.setdefault(name, []).append(cache[name].float().cpu())
        with torch.enable_grad(), lm.attention_implementation(_recording_attention(lm, store)), \
                lm.capture(names + writes, grad=True) as cache:
            out = lm.forward(select_rows(xb, rows), grad=True)
            v = target(out)
            values[rows] = v.detach().float().cpu()
            acts = {k: cache[k] for k in names}
            qk_nodes = sorted(set(qk_layer.values()))
            inputs = [acts[k] for k in names] + [store[l][part] for l in qk_nodes for part in ("q", "k", "A")]
            for d, drop in enumerate(drops_layers):
                handles = [cache[f"blocks.{drop}.{w}"].register_hook(torch.zeros_like) for w in ("attn", "mlp")
                           if cache[f"blocks.{drop}.{w}"].requires_grad] if drop is not None else []
                try:
                    got = torch.autograd.grad(v.sum(), inputs, allow_unused=True, retain_graph=True)
                finally:
                    for h in handles:
                        h.remove()
                got = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, got)]
                grads = dict(zip(names, got[:len(names)]))
                qk = {l: got[len(names) + 3 * i: len(names) + 3 * i + 3] for i, l in enumerate(qk_nodes)}
                for name in names:
                    g = grads[name]
                    delta = clean_acts[name][-1].to(g.device) - acts[name].detach().float()
                    if name in qk_layer:
                        # remove the first-order term through this block's queries and keys:
                        # a vector-Jacobian product through the block's norm and q/k projections only
                        l = qk_layer[name]
                        g_q, g_k, g_a = qk[l]
                        (g_path,) = torch.autograd.grad([store[l]["q"], store[l]["k"]], [acts[name]],
                                                        [g_q, g_k], retain_graph=True, allow_unused=True)
                        if g_path is not None:
                            g = g - g_path
                        contrib = (delta * g.float()).sum(-1).cpu()
                        contrib = contrib + _qk_exact(clean_store[l], store[l], g_a.float())
                    else:
                        contrib = (delta * g.float()).sum(-1).cpu()
                    drops[d].setdefault(name, []).append(contrib)
    joined = [{k: torch.cat(v) for k, v in d.items()} for d in drops]
    return joined, clean_values, values


@register("attribution_patch", family="circuit analysis", takes="pairs", cli_input="interpretlm.datasets:from_spec",
          result=PatchResult, summary="attribution patching (first-order), AtP* and EAP-IG estimates of every patch",
          check=CheckSpec("completeness_error", 0.1, threshold_of=lambda r: COMPLETENESS[r.options.get("estimator")],
                          advice="raise steps (the EAP-IG estimators), try the other EAP-IG estimator "
                                 "('eap_ig_tok' / 'eap_ig_act'), or use il.patch."))
def attribution_patch(lm: "LM", clean: Prompts, corrupted: Prompts, target: TargetLike, *,
                      over: str = "resid_pre", positions: str | int | Sequence[int] | None = None,
                      layers: Sequence[int] | None = None, estimator: str = "auto", steps: int = 5,
                      graddrop: bool = True, batch_size: int = 32) -> PatchResult:
    """Estimate the activation-patching grid from gradients (attribution patching / EAP-IG).

    Args:
        lm, clean, corrupted, target, over, positions, layers: as :func:`~interpretlm.circuits.patch`.
        estimator: ``"auto"`` (the default: ``"eap_ig_act"`` on the heads grid and
            ``"eap_ig_tok"`` on every other, the cheapest of these whose Pearson r with exact
            patching is ≥ 0.9 on each of the README's IOI swap, IOI ABC and induction sets;
            ``diagnostics["estimator"]`` says which ran), ``"attribution"`` (2 forward + 1
            backward pass), ``"atp_star"`` (AtP*,
            Kramár et al. 2024: the softmax of the attention a patched block input feeds
            recomputed exactly with the patched queries and keys, and GradDrop: 2 forward +
            ``1 + n_layers`` backward passes), ``"eap_ig"`` (gradients averaged over
            ``steps`` inputs interpolated from corrupted to clean: ``2 + steps`` forward +
            ``steps`` backward), ``"eap_ig_tok"`` (at a position whose token differs, the
            gradient averaged along that token's own path, the others corrupted; elsewhere
            EAP-IG's: ``2 + steps * paths`` forward + ``steps * paths`` backward, ``paths`` =
            differing tokens + 1, or 1 when one token differs) or ``"eap_ig_act"``
            (integrated gradients over each layer's own activation, interpolated at every
            position while the layers below stay corrupted: ``2 + steps * layers`` forward
            + ``steps * layers`` backward, one more layer for the check of non-residual grids).
        steps: interpolation points of the integrated-gradient estimators.
        graddrop: AtP* only: add GradDrop (one backward pass per layer with that layer's
            gradient dropped; the estimate's size is the mean size over the drops).
        batch_size: rows per forward / backward pass.

    Returns:
        :class:`~interpretlm.circuits.PatchResult` whose ``effect`` estimates the patching
        effect; ``diagnostics["completeness_error"]`` is ``|sum over positions of the
        layer-0 residual estimate - 1|`` (0 for exact integrated gradients; for
        ``eap_ig_tok`` along the joint path; for ``eap_ig_act`` on a residual grid the
        largest over its layers, each of whose rows patched whole is the clean run).

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
    if estimator not in ESTIMATORS:
        raise PatchingError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}.")
    if estimator == "auto":
        # heads: integrating each layer's own activation sees composition between layers (induction's
        # heads); residual grids: each differing token's own path sees interacting tokens (IOI ABC)
        estimator = "eap_ig_act" if over == "heads" else "eap_ig_tok"
    if estimator in ("eap_ig", "eap_ig_act", "eap_ig_tok") and steps < 1:
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
    real = xb.attention_mask.bool()
    dropped: list[dict[str, torch.Tensor]] = []
    check_contrib: torch.Tensor | None = None  # the check node's contributions when not those of the grid
    if estimator == "atp_star":
        # the completeness figure reads the layer-0 residual, which AtP* treats like any resid_pre node
        star_names = names if check in names or over != "resid_pre" else all_names
        drops, clean_vals, vals = atp_star_contributions(lm, xb, cb, pairs.target, star_names, over,
                                                graddrop=graddrop, batch_size=batch_size)
        contribs, dropped = drops[0], drops[1:]
        if check not in contribs:
            # the check node of another grid: its first-order estimate (AtP* adds nothing at block 0's
            # input that the grid needs), taken from one more gradient pass
            c_acts, c_grads, _ = gradients(lm, xb, pairs.target, [check], batch_size=batch_size)
            with torch.no_grad(), lm.capture([check]) as cc:
                lm.forward(cb, grad=False)
            contribs[check] = ((cc[check].float().cpu() - c_acts[check]) * c_grads[check]).sum(-1)
        clean_value, corrupt_value = float(clean_vals.mean()), float(vals.mean())
        extra = 0 if check in star_names else 1  # the check node's own gradient pass
        fwd, bwd = (2 + 2 * extra) * xb.size, (1 + (lm.n_layers if graddrop else 0) + extra) * xb.size
    else:
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
            if estimator == "eap_ig":
                _, grads, vals = gradients(lm, xb, pairs.target, all_names, embed_from=c2["embed"],
                                           embed_to=clean_embed, alphas=alphas, batch_size=batch_size)
                fwd, bwd = (2 + steps) * xb.size, steps * xb.size
            elif estimator == "eap_ig_tok":
                moved = (xb.input_ids != cb.input_ids) & real
                grads, joint, n_paths = token_path_gradients(lm, xb, pairs.target, all_names, c2["embed"],
                                                             clean_embed, moved, alphas, batch_size=batch_size)
                # the check integrates the joint path, whose sum over positions must be the whole effect
                check_contrib = ((clean_acts[check] - acts[check]) * joint[check]).sum(-1)
                fwd, bwd = 2 * xb.size + steps * n_paths, steps * n_paths
            else:
                # on residual grids every layer's own row is a completeness check; other grids
                # integrate the layer-0 residual too
                ig_names = names if over in WHOLE_LAYER_IS_CLEAN else all_names
                grads = node_ig_gradients(lm, xb, pairs.target, ig_names, clean_acts, acts, alphas,
                                          batch_size=batch_size)
                all_names = ig_names
                fwd, bwd = (2 + steps * len(ig_names)) * xb.size, steps * len(ig_names) * xb.size
        # per row and position (and head): delta · grad
        contribs = {k: ((clean_acts[k] - acts[k]) * grads[k]).sum(-1) for k in all_names}
    denom, noise = normaliser(clean_value, corrupt_value, dtype=lm.dtype)

    def grid_of(contrib: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ``[layer, ...]`` grid of mean-over-prompts estimates, on the effect's scale."""
        grid = []
        for name in names:
            c = contrib[name]
            m = real.view(*real.shape, *([1] * (c.dim() - 2))).float()
            e = (c * m).mean(0) / denom  # [pos(, head)]
            if kind == "list":
                e = e[pos_list]
            elif kind == "all":
                e = e.sum(0)
            elif kind == "last":  # each prompt's last token
                e = c[torch.arange(xb.size), xb.last_index].mean(0) / denom
            grid.append(e)
        return torch.stack(grid)

    effect = grid_of(contribs)
    if dropped:
        # GradDrop (Kramár et al. 2024): the mean size of the estimates with each layer's gradient
        # dropped in turn, so a path cancelled by another shows up; the sign is the undropped one's
        size = torch.stack([grid_of(d).abs() for d in dropped]).mean(0)
        effect = torch.where(effect < 0, -size, size)
    if estimator == "eap_ig_act" and over in WHOLE_LAYER_IS_CLEAN:
        # patching a whole residual layer is the clean run: each layer's row must add up to 1
        completeness = max(abs(float((contribs[k] * real.float()).mean(0).sum() / denom) - 1.0) for k in names)
    else:
        check_c = contribs[check] if check_contrib is None else check_contrib
        completeness = abs(float((check_c * real.float()).mean(0).sum() / denom) - 1.0)
    axes = ["layer"] + (["pos"] if kind in ("each", "list") else []) + (["head"] if over == "heads" else [])
    label = {"attribution": "attribution patching", "eap_ig": f"EAP-IG ({steps} steps)",
             "eap_ig_act": f"EAP-IG over activations ({steps} steps)",
             "eap_ig_tok": f"EAP-IG along token paths ({steps} steps)",
             "atp_star": "AtP*" + ("" if graddrop else " (QK fix, no GradDrop)")}[estimator]
    diagnostics: dict[str, Any] = {"estimator": estimator, "forward_passes": fwd, "backward_passes": bwd, "completeness_error": completeness,
                                   "seconds": time.perf_counter() - t0}
    result = PatchResult(
        model=lm.name, method=f"{label} ({over})", target=pairs.target.to_dict(), policy=xb.policy,
        diagnostics=diagnostics, effect=effect, patched=None, axes=axes, layers=layer_list,
        positions=pos_list if kind in ("each", "list") else kind, tokens=list(xb.tokens[0]),
        clean_tokens=list(cb.tokens[0]), over=over, clean_value=clean_value, corrupt_value=corrupt_value,
        n_prompts=xb.size)
    if noise:
        result.warn(noise, NoiseWarning)
    return result
