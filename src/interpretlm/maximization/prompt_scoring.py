"""Scoring prompts for a unit: the unit's value and the prompt's cross-entropy in batched passes, candidate
token swaps scored on their parents' key/value cache from the changed position on, and the gradients
of each member's objective (activation minus its fluency weight times cross-entropy) with respect to
its one-hot tokens, which rank the swaps of EPO and GCG.
"""

from __future__ import annotations

import copy
import functools
import inspect
from contextlib import ExitStack
from typing import Any

import torch

from ..errors import InterpretLMError
from ..units import BoundUnits, bind_units, unit_values


class OptimizationError(InterpretLMError, ValueError):
    """An optimization request that cannot run (several units, a length of 0, no usable tokens...)."""


# ---------------------------------------------------------------------- scoring
def _one_unit(lm: Any, units: Any) -> BoundUnits:
    bound = bind_units(lm, units)
    if bound.size != 1:
        raise OptimizationError(f"Optimization takes one unit; got {bound.size}. Mine many units with method='mine', "
                                "or optimize them one by one.")
    return bound


def _prefix(lm: Any) -> list[int]:
    """The BOS token the tokenizer puts before a text (kept fixed, never optimized)."""
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    return [int(bos)] if lm.tokenize("a").policy.get("bos_added") else []


def _allowed(lm: Any) -> torch.Tensor:
    """``[vocab]`` True for tokens a prompt may use (not special tokens, inside the embedding matrix)."""
    v = lm.model.get_input_embeddings().weight.shape[0]
    ok = torch.zeros(v, dtype=torch.bool)
    ok[: min(v, len(lm.tokenizer))] = True
    for t in getattr(lm.tokenizer, "all_special_ids", []) or []:
        if 0 <= t < v:
            ok[t] = False
    return ok


def _nll(logits: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    """``[..., n]`` next-token loss ``-log p(tok)`` from ``logits [..., n, vocab]``: one logsumexp over the
    vocabulary instead of a whole ``[..., n, vocab]`` log-softmax written out (the same numbers to rounding)."""
    logits = logits.float()
    return logits.logsumexp(-1) - logits.gather(-1, tok.unsqueeze(-1)).squeeze(-1)


def _ce(lm: Any, logits: torch.Tensor, ids: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """``[m]`` mean next-token loss of the optimized tokens ``ids [m, n_prefix + L]``.

    ``logits [m, p, vocab]`` cover the positions from 0 on; a causal model's may stop before the last
    one (``p = pos - 1``: no token follows the prompt, so its logits are never read)."""
    if lm.is_causal:
        start = max(n_prefix, 1)
        return _nll(logits[:, start - 1:ids.shape[1] - 1], ids[:, start:]).mean(1)
    return _nll(logits[:, n_prefix:], ids[:, n_prefix:]).mean(1)


def _keep(lm: Any, n: int) -> dict[str, Any]:
    """Keyword arguments asking a causal LM for the logits of its first ``n - 1`` positions only (the last
    position's logits, a fifth of a small model's per-token cost, are never read), when its forward takes
    ``logits_to_keep``."""
    if not (lm.is_causal and n > 1 and _takes_keep(type(lm.model))):
        return {}
    return {"logits_to_keep": torch.arange(n - 1, device=lm.device)}


@functools.lru_cache(maxsize=None)
def _takes_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def score(lm: Any, bound: BoundUnits, ids: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``([m], [m])``: activation at the last token and cross-entropy of prompts ``ids [m, pos]`` (no gradient).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.units import Unit, bind_units
        >>> lm = tiny_lm("llama")
        >>> act, ce = score(lm, bind_units(lm, Unit("blocks.1.mlp.neurons", 3)), torch.tensor([[5, 6, 7], [8, 9, 10]]))
        >>> act.shape, bool((ce > 0).all())
        (torch.Size([2]), True)
    """
    acts, ces = [], []
    n_prefix = len(_prefix(lm))
    keep = _keep(lm, ids.shape[1])
    with lm.capture(bound.components) as cache, torch.inference_mode():
        for s in range(0, len(ids), batch_size):
            chunk = ids[s:s + batch_size]
            if keep:    # a causal LM with a head and no padding: the model itself, without the last logits
                with lm.running():
                    logits = lm.model(input_ids=chunk.to(lm.device), use_cache=False, **keep).logits
            else:
                logits = lm.forward(chunk.tolist()).logits
            acts.append(unit_values(lm, bound, cache)[:, -1, 0].float().cpu())
            ces.append(_ce(lm, logits, chunk.to(logits.device), n_prefix).cpu())
    return torch.cat(acts), torch.cat(ces)


def _shares_prefixes(lm: Any) -> bool:
    """Whether candidates can run on their parent's key/value cache: a causal LM with a head whose cache
    keeps every position (a sliding-window cache keeps only the window, so those models run full passes)."""
    if not (lm.is_causal and lm.has_head):
        return False
    cfg = lm.model.config
    return not (getattr(cfg, "sliding_window", None)
                and "sliding_attention" in (getattr(cfg, "layer_types", None) or ["sliding_attention"]))


def _prefix_cache(cache: Any, rows: torch.Tensor, length: int) -> Any:
    """A copy of ``cache`` holding the parents ``rows`` and their first ``length`` positions."""
    layers = cache.layers
    keep = [(layer.keys, layer.values) for layer in layers]
    for layer in layers:   # the copy need not duplicate the tensors it replaces
        layer.keys = layer.values = None
    try:
        out = copy.deepcopy(cache)
    finally:
        for layer, (k, v) in zip(layers, keep):
            layer.keys, layer.values = k, v
    for layer, (k, v) in zip(out.layers, keep):
        layer.keys, layer.values = k[rows, :, :length], v[rows, :, :length]
    return out


class Shared:
    """What the candidates of one iteration share with their parents ``[m, pos]``: the parents' key/value
    cache, their logits ``[m, pos - 1, vocab]`` and each parent token's next-token loss ``nll [m, pos]``
    (position 0 has none). Built by the gradient pass, which runs the parents anyway."""

    def __init__(self, cache: Any, logits: torch.Tensor, ids: torch.Tensor) -> None:
        self.cache = cache
        self.logits = logits.detach().float().cpu()
        self.lse = self.logits.logsumexp(-1)                                   # [m, pos - 1]
        self.nll = torch.zeros(ids.shape, dtype=torch.float32)
        self.nll[:, 1:] = self.lse[:, :ids.shape[1] - 1] - self.logits[:, :ids.shape[1] - 1].gather(
            -1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)

    def put(self, rows: torch.Tensor, other: "Shared") -> None:
        """Replace the parents ``rows`` by ``other``'s (members with a new prompt, after a partial gradient pass)."""
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys, mine.values = mine.keys.clone(), mine.values.clone()
            mine.keys[rows.to(mine.keys.device)] = theirs.keys
            mine.values[rows.to(mine.values.device)] = theirs.values
        self.logits[rows], self.lse[rows], self.nll[rows] = other.logits, other.lse, other.nll

    def loss_of(self, parent: torch.Tensor, q: int, token: torch.Tensor) -> torch.Tensor:
        """``[c]`` the loss of ``token`` at position ``q`` after the first ``q`` tokens of ``parent``."""
        return self.lse[parent, q - 1] - self.logits[parent, q - 1].gather(-1, token.unsqueeze(-1)).squeeze(-1)


def _cache_of(out: Any) -> Any:
    """The forward output's key/value cache when it is a plain list of per-layer keys and values (which
    :func:`_prefix_cache` can slice), else ``None``."""
    cache = getattr(out, "cache", None)
    cache = cache if cache is not None else getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return None
    for layer in layers:    # built under autograd by the gradient pass: keep the numbers, not the graph
        layer.keys, layer.values = layer.keys.detach(), layer.values.detach()
    return cache


def _parent_pass(lm: Any, ids: torch.Tensor) -> Shared | None:
    """:class:`Shared` for parents ``ids [m, pos]`` from a forward pass of their own, or ``None`` when the
    model's cache is not a plain list of per-layer keys and values (then candidates run full passes)."""
    with torch.inference_mode(), lm.running():
        out = lm.model(input_ids=ids.to(lm.device), use_cache=True, **_keep(lm, ids.shape[1]))
    cache = _cache_of(out)
    return None if cache is None else Shared(cache, out.logits, ids)


def score_swaps(lm: Any, bound: BoundUnits, parents: torch.Tensor, parent: torch.Tensor, at: torch.Tensor,
                token: torch.Tensor, batch_size: int = 64, shared: Shared | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``([c], [c])``: :func:`score` of candidates that each change one token of a parent prompt.

    Candidate ``i`` is ``parents[parent[i]]`` (``parents [m, pos]``) with position ``at[i]`` set to
    ``token[i]``. Its tokens before ``at[i]`` are its parent's, so a causal model runs them once per
    parent: the candidates run from ``at[i]`` on, on the parents' key/value cache (grouped by
    position, one batched pass per group), and the cross-entropy takes the parent's terms before
    ``at[i]`` and the parent's next-token distribution at ``at[i] - 1``. About half the tokens of
    full passes; the same numbers up to float rounding. Other models run :func:`score`.
    ``shared``: the parents' :class:`Shared` when the caller has it (EPO's gradient pass builds it);
    otherwise one forward pass of the parents makes it.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> from interpretlm.units import Unit, bind_units
        >>> lm = tiny_lm("llama")
        >>> bound = bind_units(lm, Unit("blocks.1.mlp.neurons", 3))
        >>> parents = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
        >>> act, ce = score_swaps(lm, bound, parents, torch.tensor([0, 1]), torch.tensor([2, 1]), torch.tensor([20, 21]))
        >>> ref_act, ref_ce = score(lm, bound, torch.tensor([[5, 6, 20, 8], [9, 21, 11, 12]]))
        >>> torch.allclose(act, ref_act, rtol=1e-4, atol=1e-6), torch.allclose(ce, ref_ce, rtol=1e-4)
        (True, True)
    """
    n = len(parent)
    cands = parents[parent].clone()
    cands[torch.arange(n), at] = token
    if shared is None and _shares_prefixes(lm):
        shared = _parent_pass(lm, parents)
    if shared is None:
        return score(lm, bound, cands, batch_size)
    n_prefix = len(_prefix(lm))
    start = max(n_prefix, 1)
    width = parents.shape[1]
    act = torch.zeros(n)
    ce = torch.zeros(n)
    with lm.capture(bound.components) as captured, torch.inference_mode():
        for q in at.unique().tolist():
            group = (at == q).nonzero().flatten()
            if q == 0:          # nothing shared: whole passes
                act[group], ce[group] = score(lm, bound, cands[group], batch_size)
                continue
            keep = _keep(lm, width - q)
            for s in range(0, len(group), batch_size):
                rows = group[s:s + batch_size]
                past = _prefix_cache(shared.cache, parent[rows].to(lm.device), q)
                with lm.running():
                    # `cache` is Transformers 5's name (`past_key_values` is deprecated)
                    out = lm.model(input_ids=cands[rows, q:].to(lm.device), cache=past, use_cache=True, **keep)
                act[rows] = unit_values(lm, bound, captured)[:, -1, 0].float().cpu()
                # loss of each token from `start` on: the parent's before q, the parent's distribution at q - 1
                # for the changed token, the candidate's own logits after it
                terms = shared.nll[parent[rows]].clone()
                terms[:, q] = shared.loss_of(parent[rows], q, token[rows])
                if q + 1 < width:
                    own = out.logits[:, :width - q - 1]
                    terms[:, q + 1:] = _nll(own, cands[rows, q + 1:].to(own.device)).cpu()
                ce[rows] = terms[:, start:].mean(1)
    return act, ce


def _gradients(lm: Any, bound: BoundUnits, ids: torch.Tensor, lambdas: torch.Tensor, share: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Shared | None]:
    """Activation ``[m]``, cross-entropy ``[m]``, the ``[m, pos, vocab]`` gradient of ``act - λ·ce`` in the
    one-hot tokens and, with ``share`` (a causal LM whose cache candidates can reuse), the parents'
    :class:`Shared` from the same forward pass.

    The gradient in the one-hot tokens is ``∂obj/∂e · Eᵀ`` with ``e`` the embedding layer's output and ``E``
    the embedding matrix (Gemma's scale included in ``e``, a constant that does not change the ranking):
    the same numbers as a one-hot input ``onehot @ E`` without that ``[m, pos, vocab] @ [vocab, d]``
    product in the forward pass."""
    emb = lm.model.get_input_embeddings().weight
    slot: dict[str, torch.Tensor] = {}

    def edit(value: torch.Tensor) -> torch.Tensor:
        slot["d"] = torch.zeros_like(value, requires_grad=True)
        return value + slot["d"]

    n_prefix = len(_prefix(lm))
    shared = None
    with ExitStack() as stack, torch.enable_grad():
        stack.enter_context(lm.hook("embed", edit=edit))
        cache = stack.enter_context(lm.capture(bound.components, grad=True))
        if share:
            stack.enter_context(lm.running())
            out = lm.model(input_ids=ids.to(lm.device), use_cache=True, **_keep(lm, ids.shape[1]))
        else:
            out = lm.forward(ids.tolist(), grad=True)
        act = unit_values(lm, bound, cache)[:, -1, 0].float()
        ce = _ce(lm, out.logits, ids.to(out.logits.device), n_prefix)
        obj = (act - lambdas.to(act.device) * ce).sum()
        (g,) = torch.autograd.grad(obj, slot["d"])
    grad = (g.detach().to(emb.dtype) @ emb.detach().T).float().cpu()
    if share:
        kv = _cache_of(out)
        shared = None if kv is None else Shared(kv, out.logits, ids)
    return act.detach().cpu(), ce.detach().cpu(), grad, shared
