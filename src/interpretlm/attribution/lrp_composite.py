"""Attach the AttnLRP rules to a model for the duration of a ``with`` block (zennit-style).

Nothing in the Hugging Face module tree is replaced: the rules are forward hooks that wrap
a module's output in an identity-forward autograd function (:mod:`.lrp_rules`), and the
attention core is a function registered under its own name in Transformers' attention
registry and selected by the model's config. Every hook, the registry entries and the
config switch are removed on exit, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import InterpretLMError, UnsupportedModelError
from ..model import LM
from .lrp_rules import ATTENTION_RULES, AttentionCore, Epsilon, Identity, LayerNormRule, Ledger, Uniform

ATTN_NAME = "interpretlm_lrp"
"""The name the LRP attention function is registered under while a composite is active."""

_ELEMENTWISE = {"SiLU", "SiLUActivation", "GELU", "GELUActivation", "NewGELUActivation", "FastGELUActivation",
                "QuickGELUActivation", "GELUTanh", "PytorchGELUTanh", "AccurateGELUActivation", "ReLU", "ReLU6",
                "LeakyReLU", "ELU", "SELU", "CELU", "Tanh", "Sigmoid", "Mish", "MishActivation", "Softplus",
                "ReLUSquaredActivation", "ClippedGELUActivation", "GELUActivationPython", "LaplaceActivation",
                "Hardswish", "Hardsigmoid", "Hardtanh"}


class LRPRuleError(InterpretLMError, ValueError):
    """An LRP option that does not exist, or a model part no rule covers."""


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def _norm_kind(m: nn.Module) -> str | None:
    name = type(m).__name__
    if isinstance(m, nn.LayerNorm) or name.endswith("LayerNorm"):
        return "layer"
    if name.endswith("RMSNorm"):
        return "rms"
    return None


def _layer_of(model: nn.Module, lm: LM) -> dict[int, int]:
    """``id(module) -> layer`` for every module inside a block; ``-1`` below the first block.

    Modules of the embedding stage (BERT's embedding layer norm) act below the input where
    relevance is read, so what they absorb is not part of the conservation balance.
    """
    from ..architectures import get_module
    from ..model import resolve_blocks
    out = {}
    if "." in lm.family.embed:
        for m in get_module(model.base_model, lm.family.embed.rsplit(".", 1)[0]).modules():
            out[id(m)] = -1
    for i, block in enumerate(resolve_blocks(model, lm.family)):
        for m in block.modules():
            out[id(m)] = i
    return out


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, n, d).reshape(b, h * n_rep, n, d)


def _make_attention(rule: str, ledger: Ledger, layer_of: dict[int, int]):
    def lrp_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs: Any):
        if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
            raise UnsupportedModelError("LRP does not cover attention logit soft-capping or attention sinks yet.")
        n_rep = query.shape[1] // key.shape[1]
        k, v = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
        mask = attention_mask
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(~mask, float("-inf"))
        if mask is not None:
            mask = mask[:, :, :, : k.shape[-2]]
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out, attn = AttentionCore.apply(query, k, v, mask, float(scale), rule, ledger, layer_of.get(id(module)))
        return out.transpose(1, 2).contiguous(), attn
    return lrp_attention


@contextmanager
def _attention_function(lm: LM, fn) -> Iterator[None]:
    """Register ``fn`` as attention implementation ``ATTN_NAME`` and select it, only inside the block."""
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = lm.model
    previous = model.config._attn_implementation
    ALL_ATTENTION_FUNCTIONS[ATTN_NAME] = fn
    had_mask = ATTN_NAME in AttentionMaskInterface._global_mapping
    AttentionMaskInterface._global_mapping[ATTN_NAME] = eager_mask  # float additive masks, as eager uses
    try:
        try:
            model.set_attn_implementation(ATTN_NAME)
        except Exception:  # older Transformers: set the config field directly
            model.config._attn_implementation = ATTN_NAME
        if model.config._attn_implementation != ATTN_NAME:
            raise UnsupportedModelError(f"{type(model).__name__} does not let its attention function be chosen "
                                        "(Transformers' AttentionInterface), so LRP cannot attach its attention rule.")
        yield
    finally:
        try:
            model.set_attn_implementation(previous)
        except Exception:
            model.config._attn_implementation = previous
        del ALL_ATTENTION_FUNCTIONS[ATTN_NAME]
        if not had_mask:
            AttentionMaskInterface._global_mapping.pop(ATTN_NAME, None)


@contextmanager
def lrp_rules(lm: LM, *, epsilon: float = 1e-6, attention_rule: str = "attnlrp",
              ledger: Ledger | None = None) -> Iterator[Ledger]:
    """Make backward passes of ``lm.model`` propagate AttnLRP relevance (gradient × input form).

    Args:
        lm: the model handle.
        epsilon: stabilizer of the epsilon rule on linear layers (0: plain LRP-0).
        attention_rule: one of :data:`~interpretlm.attribution.lrp_rules.ATTENTION_RULES`.
        ledger: where absorbed relevance is recorded (a new one by default).

    Yields:
        the :class:`Ledger` filled by the next backward pass.

    Example:
        >>> with lrp_rules(lm) as ledger:  # doctest: +SKIP
        ...     emb = lm.model.get_input_embeddings()(ids).requires_grad_()
        ...     logit = lm.model(inputs_embeds=emb).logits[0, -1, token]
        ...     relevance = (emb * torch.autograd.grad(logit, emb)[0]).sum(-1)
    """
    if attention_rule not in ATTENTION_RULES:
        raise LRPRuleError(f"attention_rule must be one of {ATTENTION_RULES}; got {attention_rule!r}.")
    if epsilon < 0:
        raise LRPRuleError(f"epsilon must be >= 0; got {epsilon}.")
    ledger = ledger or Ledger()
    model = lm.model
    layer_of = _layer_of(model, lm)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def linear_hook(module, args, output):
        if not torch.is_grad_enabled() or not output.requires_grad or epsilon == 0:
            return None
        return Epsilon.apply(output, epsilon, getattr(module, "bias", None), ledger, layer_of.get(id(module)))

    def rms_hook(module, args, output):
        x = args[0] if args else None
        if x is None or not output.requires_grad:
            return None
        return Identity.apply(x, output)

    def layer_norm_hook(module, args, output):
        x = args[0] if args else None
        if x is None or not output.requires_grad:
            return None
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
        return LayerNormRule.apply(x, output, getattr(module, "weight", None), getattr(module, "bias", None),
                                   float(eps), ledger, layer_of.get(id(module)))

    def elementwise_hook(module, args, output):
        x = args[0] if args else None
        if x is None or not output.requires_grad or x.shape != output.shape:
            return None
        return Identity.apply(x, output)

    def halve_input(module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            return (Uniform.apply(args[0], 2),) + tuple(args[1:])
        return None

    try:
        for m in model.modules():
            if m is head:
                continue
            kind = _norm_kind(m)
            if _is_linear(m):
                handles.append(m.register_forward_hook(linear_hook))
            elif kind == "rms":
                handles.append(m.register_forward_hook(rms_hook))
            elif kind == "layer":
                handles.append(m.register_forward_hook(layer_norm_hook))
            elif type(m).__name__ in _ELEMENTWISE:
                handles.append(m.register_forward_hook(elementwise_hook))
        from ..architectures import get_module
        from ..model import resolve_blocks
        for block in resolve_blocks(model, lm.family):
            down = get_module(block, lm.family.mlp_out)
            mlp = get_module(block, lm.family.mlp_out.rsplit(".", 1)[0]) if "." in lm.family.mlp_out else block
            if hasattr(mlp, "gate_proj") or hasattr(mlp, "gate_up_proj"):  # down(act(gate(x)) * up(x))
                handles.append(down.register_forward_pre_hook(halve_input))
        with _attention_function(lm, _make_attention(attention_rule, ledger, layer_of)):
            yield ledger
    finally:
        for h in handles:
            h.remove()
