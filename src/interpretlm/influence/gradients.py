"""Per-example gradients of linear layers, projected per module (LoGra-style), never formed in full.

A linear layer ``y = W a`` (``W: [d_out, d_in]``) seen at positions ``t`` of one example has the
per-example weight gradient ``G = sum_t g_t a_t^T`` where ``a_t`` is its input and ``g_t = dL/dy_t``
the gradient of the example's loss at its output. With two seeded random matrices
``P_in: [k_in, d_in]`` and ``P_out: [k_out, d_out]`` (Gaussian, scaled by ``1/sqrt(k)``) the
projected gradient is ``P_out G P_in^T = sum_t (P_out g_t)(P_in a_t)^T``: ``[k_out, k_in]``, computed
from the projected activations and output gradients, so the ``d_out × d_in`` matrix is never built
(Choe et al. 2024, LoGra). A side whose width is at most ``k`` is not projected (identity), so on
small layers the gradient is exact. Grouped-query attention needs nothing special: ``k_proj`` and
``v_proj`` simply have a smaller ``d_out``.

Hooks are PyTorch forward hooks on the selected modules of ``lm.model``, removed after every pass.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import UnknownModuleError

SELECTIONS = ("mlp", "attn", "all")


@dataclass(frozen=True)
class ModuleSpec:
    """One linear layer of the index: its qualified name in ``lm.model``, widths and projected widths."""

    name: str
    d_in: int
    d_out: int
    k_in: int
    k_out: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "d_in": self.d_in, "d_out": self.d_out, "k_in": self.k_in, "k_out": self.k_out}


def _widths(module: nn.Module) -> tuple[int, int] | None:
    """``(d_in, d_out)`` of a linear layer (``nn.Linear``, GPT-2's ``Conv1D``, or an ``nn.Embedding``: a
    linear layer whose input is the one-hot token, ``d_in`` = the vocabulary), else ``None``."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.Embedding):
        return module.num_embeddings, module.embedding_dim
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None and module.weight.dim() == 2:
        return int(module.weight.shape[0]), int(module.weight.shape[1])  # Conv1D stores W as [d_in, d_out]
    return None


def resolve_modules(lm: Any, modules: str | Sequence[str]) -> list[tuple[str, nn.Module]]:
    """The linear layers a selection names, as ``(qualified name, module)`` in model order.

    Args:
        lm: the model handle.
        modules: ``"mlp"`` (every block's MLP projections), ``"attn"`` (query/key/value and output
            projections), ``"all"`` (both), or a list of names: family paths of one block
            (``"blocks.0.mlp_out"``, ``"blocks.3.attn_in"``), the token embedding ``"embed"`` and
            output head ``"unembed"``, or qualified module names of ``lm.model``
            (``"model.layers.0.self_attn.k_proj"``). An embedding is a linear layer of the one-hot
            token (its per-example gradient ``sum_t g_t onehot(x_t)^T``).

    Raises:
        UnknownModuleError: a name that is no module of the model, or a module that is not linear.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> [n for n, _ in resolve_modules(tiny_lm("llama"), "mlp")][:2]
        ['model.layers.0.mlp.gate_proj', 'model.layers.0.mlp.up_proj']
    """
    named = dict(lm.model.named_modules())
    qual = {id(m): n for n, m in named.items()}
    picked: list[nn.Module] = []
    if isinstance(modules, str):
        if modules not in SELECTIONS:
            raise UnknownModuleError(f"modules={modules!r}: give 'mlp', 'attn', 'all' or a list of module names "
                                     "('blocks.0.mlp_out', 'model.layers.0.mlp.up_proj').")
        parts = {"mlp": ("mlp_in", "mlp_out"), "attn": ("attn_in", "attn_out"),
                 "all": ("attn_in", "attn_out", "mlp_in", "mlp_out")}[modules]
        paths = lm.family.block_paths()
        for i in range(lm.n_layers):
            for part in parts:
                if part in paths:
                    picked += lm.modules(f"blocks.{i}.{part}")
    else:
        names = list(modules)
        if not names:
            raise UnknownModuleError("modules is an empty list: name at least one linear layer.")
        for name in names:
            if name in named and name:
                picked.append(named[name])
                continue
            try:
                picked += lm.modules(name)
            except Exception as exc:  # the core's ComponentError, or a path of no block
                some = [n for n, m in named.items() if _widths(m) is not None][:3]
                raise UnknownModuleError(f"{name!r} is no module of {lm.name!r}: use a family path such as "
                                         f"'blocks.0.mlp_out' or a qualified name such as {some[0]!r}.") from exc
    out, seen = [], set()
    for m in picked:
        if id(m) in seen:
            continue
        seen.add(id(m))
        if _widths(m) is None:
            raise UnknownModuleError(f"{qual.get(id(m), type(m).__name__)!r} is a {type(m).__name__}, not a linear "
                                     "layer; influence works on linear layers (nn.Linear, Conv1D) and token embeddings.")
        out.append((qual[id(m)], m))
    order = {n: i for i, n in enumerate(named)}
    return sorted(out, key=lambda nm: order[nm[0]])


def module_specs(lm: Any, modules: str | Sequence[str], projection: int | None) -> list[ModuleSpec]:
    """The :class:`ModuleSpec` of each selected layer for a projection width ``projection`` per side."""
    specs = []
    for name, m in resolve_modules(lm, modules):
        d_in, d_out = _widths(m)  # type: ignore[misc]
        k = projection
        specs.append(ModuleSpec(name, d_in, d_out, d_in if k is None or d_in <= k else k,
                                d_out if k is None or d_out <= k else k))
    return specs


def projection_matrix(name: str, side: str, d: int, k: int, seed: int) -> torch.Tensor | None:
    """The seeded Gaussian projection ``[k, d]`` (entries ``N(0, 1/k)``) of one side of one module,
    or ``None`` (identity) when ``k == d``. Derived from ``seed`` and the module's name, so the
    same index settings always give the same matrices, in any process."""
    if k >= d:
        return None
    gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(f"{name}:{side}".encode())) % (2**63))
    return torch.randn(k, d, generator=gen, dtype=torch.float32) / math.sqrt(k)


class Projector:
    """The projections of every selected module (built once per index)."""

    def __init__(self, specs: Sequence[ModuleSpec], seed: int) -> None:
        self.specs = list(specs)
        self.p_in = {s.name: projection_matrix(s.name, "in", s.d_in, s.k_in, seed) for s in specs}
        self.p_out = {s.name: projection_matrix(s.name, "out", s.d_out, s.k_out, seed) for s in specs}

    def project(self, name: str, a: torch.Tensor, g: torch.Tensor, *, ids: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``a [batch, pos, d_in]``, ``g [batch, pos, d_out]`` -> projected ``[batch, pos, k_in]``, ``[.., k_out]``.

        ``ids=True``: ``a [batch, pos]`` holds token ids, the input of an embedding (one-hot rows of
        width ``d_in``); their projection is a column of ``P_in``, gathered, never a one-hot matrix."""
        pi, po = self.p_in[name], self.p_out[name]
        spec = next(s for s in self.specs if s.name == name)
        if ids:
            a = (torch.nn.functional.one_hot(a.long(), spec.d_in).float() if pi is None
                 else pi.to(g.device).T[a.long()])
        else:
            a = a.float() if pi is None else a.float() @ pi.to(a.device).T
        g = g.float() if po is None else g.float() @ po.to(g.device).T
        return a, g


@dataclass
class PassOutput:
    """What one forward/backward pass over a batch gives, per module name.

    Attributes:
        grads: ``{name: [batch, k_out, k_in]}`` projected per-example weight gradients.
        a_cov / g_cov: ``{name: [k, k]}`` sums over real tokens of ``a' a'^T`` / ``g' g'^T`` (float64).
        exact_sq_norm / proj_sq_norm: ``[batch]`` the squared Frobenius norm of each example's full
            gradient (summed over modules; from token Gram matrices, still never forming ``G``) and of
            its projection; only when asked (``norms=True``).
        tokens: real tokens in the batch; losses: ``[batch]`` the per-example losses.
    """

    grads: dict[str, torch.Tensor]
    a_cov: dict[str, torch.Tensor]
    g_cov: dict[str, torch.Tensor]
    tokens: int
    losses: torch.Tensor
    exact_sq_norm: torch.Tensor | None = None
    proj_sq_norm: torch.Tensor | None = None


def run_pass(lm: Any, modules: Sequence[tuple[str, nn.Module]], projector: Projector, batch: Any,
             loss_rows: Callable[[Any], torch.Tensor], *, covariances: bool = False, norms: bool = False,
             grads: bool = True) -> PassOutput:
    """One forward and one backward pass over ``batch``: projected per-example gradients of ``modules``.

    ``loss_rows(out) -> [batch]`` gives each example's loss; rows must not interact (right padding,
    attention masked), so the gradient of their sum at a module's output is each row's own.
    """
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []

    def grab(name: str):
        def fwd(_m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            captured[name] = (inputs[0].detach(), output)
        return fwd

    def needs_grad(_m: nn.Module, _i: tuple, output: torch.Tensor) -> torch.Tensor | None:
        # With frozen weights the graph would start nowhere: the embeddings become its leaf.
        return output.detach().requires_grad_(True) if not output.requires_grad else None

    embeddings = {name for name, m in modules if isinstance(m, nn.Embedding)}
    try:
        # first, so that an embedding's own hook captures the output the graph starts from
        handles.append(lm.model.get_input_embeddings().register_forward_hook(needs_grad))
        for name, m in modules:
            handles.append(m.register_forward_hook(grab(name)))
        with torch.enable_grad():
            out = lm.forward(batch, grad=True)
            losses = loss_rows(out)
            names = [n for n, _ in modules]
            missing = [n for n in names if n not in captured]
            if missing:
                raise UnknownModuleError(f"{missing[0]!r} did not run in the forward pass; pick modules the model uses.")
            outs = [captured[n][1] for n in names]
            # an intervention can cut a layer out of the graph (its output replaced by a constant): no gradient
            live = [i for i, o in enumerate(outs) if o.requires_grad]
            got = (torch.autograd.grad(losses.sum(), [outs[i] for i in live], allow_unused=True)
                   if live and losses.requires_grad else [None] * len(live))
            gs: list[torch.Tensor | None] = [None] * len(outs)
            for i, g in zip(live, got):
                gs[i] = g
    finally:
        for h in handles:
            h.remove()
    mask = out.batch.attention_mask.to(losses.device).float().unsqueeze(-1)  # [batch, pos, 1]
    res = PassOutput({}, {}, {}, int(mask.sum()), losses.detach())
    exact = torch.zeros(losses.shape[0], dtype=torch.float64)
    proj = torch.zeros(losses.shape[0], dtype=torch.float64)
    for name, g in zip(names, gs):
        a = captured[name][0]
        emb = name in embeddings
        if g is None:
            g = torch.zeros(*(a.shape if emb else a.shape[:-1]), captured[name][1].shape[-1])
        g = g.reshape(g.shape[0], -1, g.shape[-1])
        if emb:  # token ids [batch, pos]: their one-hot rows are the layer's inputs
            a = a.reshape(a.shape[0], -1)
            pa, pg = projector.project(name, a, g, ids=True)
            pa = pa * mask  # pads carry no gradient, and no covariance
        else:
            a = a.reshape(a.shape[0], -1, a.shape[-1]) * mask  # pads carry no gradient, and no covariance
            pa, pg = projector.project(name, a, g)
        if grads or norms:
            G = torch.einsum("bto,bti->boi", pg, pa)  # [batch, k_out, k_in]
            if grads:
                res.grads[name] = G
            if norms:
                gf = g.double()
                if emb:  # one-hot rows: a_t.a_s is 1 where the two tokens are the same (and real)
                    m2 = mask[..., 0].double()
                    gram_a = (a[:, :, None] == a[:, None, :]).double() * m2[:, :, None] * m2[:, None, :]
                else:
                    af = a.double()
                    gram_a = torch.einsum("bti,bsi->bts", af, af)
                # ||sum_t g_t a_t^T||_F^2 = sum_{t,s} (g_t.g_s)(a_t.a_s): the full norm from [pos, pos] Grams
                exact += (torch.einsum("bto,bso->bts", gf, gf) * gram_a).sum((1, 2))
                proj += G.double().pow(2).sum((1, 2))
        if covariances:
            pa64, pg64 = pa.double(), pg.double()
            res.a_cov[name] = torch.einsum("bti,btj->ij", pa64, pa64)
            res.g_cov[name] = torch.einsum("bti,btj->ij", pg64, pg64)
    if norms:
        res.exact_sq_norm, res.proj_sq_norm = exact, proj
    return res


def lm_loss_rows(lm: Any, *, sampled: bool = False, generator: torch.Generator | None = None
                 ) -> Callable[[Any], torch.Tensor]:
    """``fn(out) -> [batch]``: each text's summed next-token cross-entropy (a causal model), or the summed
    cross-entropy of each token at its own position (a masked model, which has no next token).

    ``sampled=True`` draws the labels from the model's own distribution (the true Fisher, for
    K-FAC's covariances) instead of the text's tokens (the empirical Fisher)."""

    def fn(out: Any) -> torch.Tensor:
        ids = out.batch.input_ids.to(out.logits.device)
        mask = out.batch.attention_mask.to(out.logits.device).float()
        logits = out.logits
        if lm.is_causal:
            logits, ids, mask = logits[:, :-1], ids[:, 1:], mask[:, 1:] * mask[:, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        if sampled:
            flat = logp.detach().exp().reshape(-1, logp.shape[-1])
            ids = torch.multinomial(flat, 1, generator=generator).reshape(ids.shape)
        nll = -logp.gather(-1, ids.unsqueeze(-1))[..., 0] * mask
        return nll.sum(1)
    return fn
