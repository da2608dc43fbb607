"""AttnLRP rules as autograd functions: the forward is unchanged, the backward carries relevance.

LRP is run in the *gradient × input* form: every rule is a backward pass whose "gradient"
``g`` at a tensor ``x`` makes ``x * g`` the relevance of ``x``. Linear maps and sums then
need no change at all (``sum(x * W^T g) = sum(Wx * g)``), so only the non-linear steps get
a rule (Achtibat et al., *AttnLRP*, ICML 2024):

* linear layers: the epsilon rule, ``g * z / (z + eps·sign z)``; a bias keeps ``b * g``;
* RMS / layer norm: linear with the normalizer held constant (a layer-norm bias keeps ``b * g``);
* element-wise non-linearities (SiLU, GELU...): the identity rule, relevance passes unchanged;
* element-wise products (``act(gate) * up``): the uniform rule, half to each factor;
* attention: ``softmax(q k^T)`` and ``A @ V`` per AttnLRP (see :class:`AttentionCore`).

Each function records the relevance it absorbs in a :class:`Ledger` so the result can say
where relevance went missing and how much.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.autograd import Function

ATTENTION_RULES = ("attnlrp", "attnlrp-absorbing", "attnlrp-proportional", "attnlrp-scores", "cp")
"""How attention propagates relevance.

* ``"attnlrp"``: AttnLRP's uniform split of ``A @ V`` between the attention
  weights and the values, and AttnLRP's softmax rule ``R_in = x (R - s ΣR)`` for the
  weights. That rule reproduces only the part of ``A`` that is a first-order function of
  the scores (``A_lin = s (x - Σ s x)``); the rest (``A - A_lin``, the softmax's "bias")
  is treated as a constant attention weight, whose relevance goes to the values as in
  CP-LRP. Nothing is absorbed, and what reaches queries and keys is exactly AttnLRP's.
* ``"attnlrp-absorbing"`` (default): the published rule, where the softmax bias absorbs its
  share (as LXT does); the absorbed amount is reported. Of all the rules here it ranks tokens
  best (deletion AOPC over 50 prompts, README), so it is the default.
* ``"attnlrp-proportional"``: the published rule, and the relevance it would absorb is
  given back, per query row, to every term that already holds relevance (each score and
  each value's half) in proportion to the absolute relevance it holds: signs and the
  published ranking of the row's terms are kept, and nothing is absorbed.
* ``"attnlrp-scores"``: as ``"attnlrp-proportional"``, but the remainder goes to the
  scores only (queries and keys), in proportion to their absolute relevance.
* ``"cp"``: CP-LRP (Ali et al., 2022): attention weights held constant; all relevance
  goes to the values.
"""


ABSORBING_RULES = ("attnlrp-absorbing",)
"""The rules that absorb relevance by design (their check counts what they book as accounted)."""


class Ledger:
    """Relevance absorbed by the rules during one backward pass, by kind and layer."""

    def __init__(self) -> None:
        self.absorbed: dict[str, float] = defaultdict(float)
        self.by_layer: dict[tuple[str, int], float] = defaultdict(float)
        self.moved_to_values = 0.0
        self.redistributed = 0.0
        self.below_input: dict[str, float] = defaultdict(float)

    def add(self, kind: str, amount: torch.Tensor, layer: int | None = None) -> None:
        v = float(amount)
        if layer == -1:  # below the input where relevance is read (embedding layer norm)
            self.below_input[kind] += v
            return
        self.absorbed[kind] += v
        if layer is not None:
            self.by_layer[(kind, layer)] += v


class Epsilon(Function):
    """Epsilon rule on the output ``z`` of a linear layer (identity forward).

    backward: ``g * z / (z + eps * sign(z))``; the layer's bias then keeps ``b * g'``.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, eps: float, bias: torch.Tensor | None, ledger: Ledger | None,
                layer: int | None) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.eps, ctx.bias, ctx.ledger, ctx.layer = eps, bias, ledger, layer
        return z.view_as(z)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (z,) = ctx.saved_tensors
        sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        g2 = g * z / (z + ctx.eps * sign)
        if ctx.ledger is not None:
            ctx.ledger.add("epsilon", (g * z).sum() - (g2 * z).sum(), ctx.layer)
            if ctx.bias is not None:
                ctx.ledger.add("linear_bias", (g2 * ctx.bias).sum(), ctx.layer)
        return g2, None, None, None, None


class Identity(Function):
    """Identity rule for an element-wise map ``y = f(x)``: ``R_x = R_y``, i.e. ``g_x = g * y / x``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(x != 0, y / torch.where(x != 0, x, torch.ones_like(x)), torch.zeros_like(x))
        ctx.save_for_backward(ratio)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return g * ratio, None


class LayerNormRule(Function):
    """Layer norm ``y = w (x - mean) / sigma + b`` with ``sigma`` held constant.

    backward: ``g_x = C (w g / sigma)`` with ``C`` the centering map; the bias keeps ``b * g``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float, ledger: Ledger | None, layer: int | None) -> torch.Tensor:
        sigma = (x.float().var(-1, unbiased=False, keepdim=True) + eps).sqrt()
        ctx.save_for_backward(sigma)
        ctx.weight, ctx.bias, ctx.ledger, ctx.layer, ctx.dtype = weight, bias, ledger, layer, x.dtype
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (sigma,) = ctx.saved_tensors
        gf = g.float()
        v = gf * (ctx.weight.float() if ctx.weight is not None else 1.0) / sigma
        gx = v - v.mean(-1, keepdim=True)
        if ctx.ledger is not None and ctx.bias is not None:
            ctx.ledger.add("norm_bias", (gf * ctx.bias.float()).sum(), ctx.layer)
        return gx.to(ctx.dtype), None, None, None, None, None, None


class Uniform(Function):
    """Uniform rule for a product of ``n`` factors, applied to the product: ``g / n`` (identity forward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> torch.Tensor:
        ctx.n = n
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g / ctx.n, None


class AttentionCore(Function):
    """``O = softmax(q k^T · scale + mask) @ v`` with AttnLRP's backward.

    Shapes: ``q [batch, head, query, d_head]``, ``k, v [batch, head, key, d_head]`` (key /
    value heads already repeated for grouped-query attention), ``mask`` broadcastable to
    ``[batch, head, query, key]`` (additive) or ``None``. Returns ``(O, A)``.

    With ``s = A[q]``, ``x = S[q]`` (scores) and ``G = g @ v^T`` (the plain gradient at A):

    * queries and keys: the ``A``-half of ``A @ V`` (uniform rule) goes through the softmax
      rule ``R_x = x (R - s ΣR)``, which is ``x ·`` the softmax gradient of ``G / 2``; then
      the uniform rule on ``q k^T`` halves it again between q and k;
    * values: ``½ A^T g`` by the uniform rule, plus (rule ``"attnlrp"``) the softmax bias
      ``½ (A - A_lin)^T g`` with ``A_lin = s (x - Σ s x)``, which makes the whole step
      conservative; rule ``"cp"`` gives values ``A^T g`` and nothing to q, k.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, scale: float, rule: str, ledger: Ledger | None, layer: int | None):
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores + mask.float()
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn.to(v.dtype), v)
        ctx.save_for_backward(q, k, v, attn, mask if mask is not None else torch.empty(0))
        ctx.has_mask, ctx.scale, ctx.rule, ctx.ledger, ctx.layer = mask is not None, scale, rule, ledger, layer
        return out, attn.to(q.dtype)

    @staticmethod
    def backward(ctx, g, _g_attn):
        q, k, v, attn, mask = ctx.saved_tensors
        gf, vf = g.float(), v.float()
        if ctx.rule == "cp":
            return (torch.zeros_like(q), torch.zeros_like(k), torch.matmul(attn.transpose(-1, -2), gf).to(v.dtype),
                    None, None, None, None, None)
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * ctx.scale
        if ctx.has_mask:
            scores = scores + mask.float()
        x = torch.where(attn > 0, scores, torch.zeros_like(scores))   # masked keys: s = 0, keep finite
        grad_a = torch.matmul(gf, vf.transpose(-1, -2)) * 0.5          # uniform rule: A gets half
        grad_s = attn * (grad_a - (attn * grad_a).sum(-1, keepdim=True))  # softmax rule (x * this = R_x)
        w_v = 0.5 * attn
        if ctx.rule in ("attnlrp-proportional", "attnlrp-scores"):
            # per query row: what the published rule loses, handed back in proportion to |relevance held|
            r_s = x * grad_s                                            # [b, h, q, key] relevance of the scores
            r_v = 0.5 * attn * (2.0 * grad_a)                           # the values' half, per (query, key)
            rem = (2.0 * attn * grad_a).sum(-1, keepdim=True) - r_s.sum(-1, keepdim=True) - r_v.sum(-1, keepdim=True)
            held_s, held_v = r_s.abs().sum(-1, keepdim=True), r_v.abs().sum(-1, keepdim=True)
            if ctx.rule == "attnlrp-proportional":
                to_s, to_v = torch.ones_like(held_s), torch.ones_like(held_v)
            else:  # scores only; a row whose scores hold nothing (one visible key) gives it to its values
                to_s = (held_s > 0).to(held_s.dtype)
                to_v = 1.0 - to_s
            held = to_s * held_s + to_v * held_v
            # a row holding nothing has nothing to lose (rem is 0 there up to rounding): factor 0
            f = torch.where(held > 0, rem / torch.where(held > 0, held, torch.ones_like(held)), torch.zeros_like(held))
            grad_s = grad_s * (1.0 + to_s * f * torch.sign(r_s))
            w_v = w_v * (1.0 + to_v * f * torch.sign(grad_a))
        if ctx.rule == "attnlrp":
            a_lin = attn * (x - (attn * x).sum(-1, keepdim=True))
            w_v = w_v + 0.5 * (attn - a_lin)                            # the softmax bias, as a constant weight
        grad_v = torch.matmul(w_v.transpose(-1, -2), gf)
        grad_q = 0.5 * ctx.scale * torch.matmul(grad_s, k.float())     # uniform rule on q k^T
        grad_k = 0.5 * ctx.scale * torch.matmul(grad_s.transpose(-1, -2), q.float())
        if ctx.ledger is not None:
            r_weights = (attn * grad_a).sum()
            r_scores = (x * grad_s).sum()
            if ctx.rule == "attnlrp":
                ctx.ledger.moved_to_values += float(r_weights - r_scores)
            elif ctx.rule in ("attnlrp-proportional", "attnlrp-scores"):
                ctx.ledger.redistributed += float(rem.sum())
            else:
                ctx.ledger.add("softmax", r_weights - r_scores, ctx.layer)
        return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype), None, None, None, None, None
