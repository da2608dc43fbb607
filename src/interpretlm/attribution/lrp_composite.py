"""Attach the AttnLRP rules to a model for the duration of a ``with`` block (zennit-style).

Nothing in the Hugging Face module tree is replaced: the rules are forward hooks that wrap
a module's output in an identity-forward autograd function (:mod:`.lrp_rules`), and the
attention core is a function run through the model's one attention switch
(:meth:`LM.attention_implementation`, which leaves Transformers' registries as they were).
Which modules are norms (and of which kind), activations and gated MLPs is read from the
family table (:class:`~interpretlm.architectures.Family`). Every hook and the attention
switch are removed on exit, also when the body raises.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from ..architectures import find_module, get_module
from ..attention_switch import attention_inputs
from ..errors import InterpretLMError, UnsupportedModelError
from ..model import LM
from .lrp_rules import ATTENTION_RULES, AttentionCore, Epsilon, Identity, LayerNormRule, Ledger, Uniform


class LRPRuleError(InterpretLMError, ValueError):
    """An LRP option that does not exist, or a model part no rule covers."""


def _is_linear(m: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D  # GPT-2's transposed linear layer
    return isinstance(m, (nn.Linear, Conv1D))


def _rule_modules(lm: LM) -> tuple[list[tuple[nn.Module, str]], list[nn.Module], list[int]]:
    """From the family table: ``[(norm module, kind)]``, activation modules, and the layers with a gated MLP."""
    fam = lm.family
    if fam.norm not in ("rms", "layer"):
        raise UnsupportedModelError(
            f"The {fam.name!r} family table does not say which norm its models use (Family.norm 'rms' or "
            "'layer'), so LRP cannot choose its norm rule; register the family with norm=... and norms=(...).")
    model, base = lm.model, lm.model.base_model
    norms: list[nn.Module] = []
    acts: list[nn.Module] = []
    gated: list[int] = []
    if fam.embed_norm is not None:
        norms.append(get_module(base, fam.embed_norm))
    for i in range(lm.n_layers):
        norms += lm.modules(f"blocks.{i}.norms") if fam.norms else []
        if fam.mlp_act is not None:
            acts.append(lm.module(f"blocks.{i}.mlp_act"))
        if fam.gated_mlp:  # down(act(gate(x)) * up(x))
            gated.append(i)
    if fam.final_norm is not None:
        norms.append(lm.final_norm_module())
    if lm.has_head:  # heads of masked LMs have their own norm and activation
        norms += [m for p in fam.head_norms if (m := find_module(model, p)) is not None]
        acts += [m for p in fam.head_acts if (m := find_module(model, p)) is not None]
    return [(m, fam.norm) for m in norms], acts, gated


def _layer_of(model: nn.Module, lm: LM) -> dict[int, int]:
    """``id(module) -> layer`` for every module inside a block; ``-1`` below the first block.

    Modules of the embedding stage (BERT's embedding layer norm) act below the input where
    relevance is read, so what they absorb is not part of the conservation balance.
    """
    out = {}
    if "." in lm.family.embed:
        for m in get_module(model.base_model, lm.family.embed.rsplit(".", 1)[0]).modules():
            out[id(m)] = -1
    for i, block in enumerate(lm.blocks):
        for m in block.modules():
            out[id(m)] = i
    return out


def _make_attention(rule: str, ledger: Ledger, layer_of: dict[int, int]):
    def lrp_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs: Any):
        if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
            raise UnsupportedModelError("LRP does not cover attention logit soft-capping or attention sinks yet.")
        k, v, mask = attention_inputs(query, key, value, attention_mask)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out, attn = AttentionCore.apply(query, k, v, mask, float(scale), rule, ledger, layer_of.get(id(module)))
        return out.transpose(1, 2).contiguous(), attn
    return lrp_attention


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
    owner = threading.get_ident()  # rules act only on this thread's passes (module hooks are process-wide)

    def linear_hook(module, args, output):
        if threading.get_ident() != owner:
            return None
        if not torch.is_grad_enabled() or not output.requires_grad or epsilon == 0:
            return None
        return Epsilon.apply(output, epsilon, getattr(module, "bias", None), ledger, layer_of.get(id(module)))

    def rms_hook(module, args, output):
        if threading.get_ident() != owner:
            return None
        x = args[0] if args else None
        if x is None or not output.requires_grad:
            return None
        return Identity.apply(x, output)

    def layer_norm_hook(module, args, output):
        if threading.get_ident() != owner:
            return None
        x = args[0] if args else None
        if x is None or not output.requires_grad:
            return None
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
        return LayerNormRule.apply(x, output, getattr(module, "weight", None), getattr(module, "bias", None),
                                   float(eps), ledger, layer_of.get(id(module)))

    def elementwise_hook(module, args, output):
        if threading.get_ident() != owner:
            return None
        x = args[0] if args else None
        if x is None or not output.requires_grad or x.shape != output.shape:
            return None
        return Identity.apply(x, output)

    def halve(x: torch.Tensor) -> torch.Tensor | None:
        # the gated product splits its relevance evenly between its two factors
        return Uniform.apply(x, 2) if x.requires_grad else None

    norms, acts, gated = _rule_modules(lm)
    rules: dict[int, Any] = {id(m): (rms_hook if kind == "rms" else layer_norm_hook) for m, kind in norms}
    rules.update({id(m): elementwise_hook for m in acts})
    try:
        for m in model.modules():
            if m is head:
                continue
            if _is_linear(m):
                handles.append(m.register_forward_hook(linear_hook))
            elif id(m) in rules:
                handles.append(m.register_forward_hook(rules[id(m)]))
        with ExitStack() as stack:
            for layer in gated:
                stack.enter_context(lm.hook(f"blocks.{layer}.mlp.neurons", edit=halve))
            # returns_weights: attention patterns captured inside LRP are those of its own attention function
            stack.enter_context(lm.attention_implementation(_make_attention(attention_rule, ledger, layer_of),
                                                            returns_weights=True))
            yield ledger
    finally:
        for h in handles:
            h.remove()
