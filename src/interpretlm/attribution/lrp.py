"""``il.attribute(lm, prompt, target, method="lrp")``: AttnLRP in one forward and one backward pass.

The rules live in :mod:`.lrp_rules` and are attached for the duration of one call by
:func:`.lrp_composite.lrp_rules`. Relevance starts at the explained logits (for
``NextToken`` the token's logit, for ``Contrast`` the logit difference, for any other
target ``logits · ∂target/∂logits``) and is read at the input of the first block (token
embeddings, plus position embeddings where the model adds them), one score per token.

The result checks conservation (``|sum(relevance) - explained| / |explained|``) and lists
what the rules absorbed (linear and norm biases, the epsilon stabilizer, the softmax rule
in its absorbing form) per kind and per layer. The default softmax rule (the published one,
which ranks tokens best) absorbs by design: its check is conservation with the booked
absorbed relevance counted as accounted, and the check's name shows the absorbed share.

LRP's inventors describe LRP as a patented technology (see LXT's license); check before
commercial use. This implementation is interpretlm's own code.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CheckWarning, ComponentError, EmptyInputError
from ..model import LM
from ..targets import Contrast, NextToken, PooledEmbedding, TargetLike, as_target, prediction_positions
from ..tokens import Prompts
from ..viz.figures import Bars, Figure, Table
from .lrp_composite import lrp_rules
from .lrp_rules import ABSORBING_RULES, ATTENTION_RULES
from .registry import register_method
from .result import Attribution

_BLOCK_PARTS = ("resid_pre", "attn", "mlp", "resid_post")


@dataclass(kw_only=True)
class LRPAttribution(Attribution):
    """An :class:`Attribution` from LRP, with the relevance of every block's parts.

    Attributes:
        layer_relevances: ``{canonical name: [pos]}`` relevance summed over ``d_model``
            for ``embed`` and ``blocks.{i}.resid_pre / attn / mlp / resid_post``.
    """

    layer_relevances: dict[str, Any] = field(default_factory=dict)

    def layer_relevance(self, name: str) -> np.ndarray:
        """``[pos]`` relevance of a component, e.g. ``r.layer_relevance("blocks.10.resid_post")``."""
        if name not in self.layer_relevances:
            raise ComponentError(f"No relevance recorded for {name!r}; recorded: 'embed' and "
                                 f"'blocks.{{i}}.{{{', '.join(_BLOCK_PARTS)}}}'.")
        return np.asarray(self.layer_relevances[name], dtype=float)

    def summary(self) -> str:
        """The common summary, plus the share of the output the rules booked as absorbed."""
        share = self.diagnostics.get("absorbed_share")
        return super().summary() + (f" · absorbed (booked) {share:.1%}" if share is not None else "")

    def figures(self) -> dict[str, Figure]:
        """The token relevances, ``"relevance_flow"`` (where the relevance went: explained, kept at
        the input, absorbed) and ``"block_relevance"`` (bars: relevance written by each block)."""
        figs = super().figures()
        d = self.diagnostics
        absorbed = d.get("absorbed", {})
        rows = [("explained (output relevance)", d.get("output_relevance")),
                ("relevance at the input", d.get("input_relevance")),
                ("conservation error", f"{d.get('conservation_error', float('nan')):.3%}")]
        rows += [(f"absorbed by {k.replace('_', ' ')}", v) for k, v in absorbed.items()]
        if d.get("softmax_bias_to_values") is not None:
            rows.append(("softmax bias credited to values", d["softmax_bias_to_values"]))
        if d.get("softmax_remainder_redistributed") is not None:
            rows.append(("softmax remainder redistributed in proportion", d["softmax_remainder_redistributed"]))
        rows.append(("first token's relevance", d.get("first_token_relevance")))
        figs["relevance_flow"] = Table(["", "value"], rows, title="Where the relevance went")
        layers = sorted({int(k.split(".")[1]) for k in self.layer_relevances if k.startswith("blocks.")})
        written = {p: [float(np.sum(self.layer_relevance(f"blocks.{i}.{p}"))) for i in layers] for p in ("attn", "mlp")}
        figs["block_relevance"] = Bars([str(i) for i in layers], {"attention": written["attn"], "MLP": written["mlp"]},
                                       signed=True, label_header="layer", title="Relevance written by each block",
                                       unit="relevance, in units of the explained output")
        return figs


def _seed(target: Any, lm: LM, out: Any) -> tuple[torch.Tensor, str]:
    """``[batch, pos, vocab]`` relevance seed at the logits, and what it explains."""
    logits = out.logits
    seed = torch.zeros_like(logits)
    if isinstance(target, (NextToken, Contrast)):
        pos = prediction_positions(lm, out.batch)
        rows = torch.arange(out.batch.size)
        if isinstance(target, NextToken):
            seed[rows, pos, target.token_id] = 1.0
            return seed, f"logit of {target.token!r}"
        seed[rows, pos, target.ids[0]] += 1.0
        seed[rows, pos, target.ids[1]] -= 1.0
        return seed, f"logit({target.a!r}) - logit({target.b!r})"
    detached = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        value = target(type(out)(logits=detached, hidden=out.hidden.detach(), batch=out.batch))
        (grad,) = torch.autograd.grad(value.sum(), detached)
    return grad, "logits · ∂target/∂logits (first-order)"


def _hidden_seed(target: Any, out: Any) -> tuple[torch.Tensor, str]:
    """``[batch, pos, d_model]`` seed at the last hidden state for targets on it (``PooledEmbedding``).

    A cosine similarity is explained with both norms held constant (as the norm rule does), so
    the seed reproduces the cosine exactly; other targets use their gradient (exact for the
    linear and degree-1 ones: ``direction``, ``dim``, the norm).
    """
    hidden = out.hidden.detach().float().requires_grad_(True)
    with torch.enable_grad():
        if isinstance(target, PooledEmbedding) and getattr(target, "_ref", None) is not None:
            pooled = target.pool(hidden, out.batch)
            ref = target._ref.to(pooled.device).float()
            coef = (ref / (pooled.detach().norm(dim=-1, keepdim=True) * ref.norm())).detach()
            value, how = (pooled * coef).sum(), "cosine similarity (norms held constant)"
        else:
            value = target(type(out)(logits=None, hidden=hidden, batch=out.batch)).sum()
            how = "hidden · ∂target/∂hidden (first-order)"
        (grad,) = torch.autograd.grad(value, hidden)
    return grad.to(out.hidden.dtype), how


def _lrp_one(lm: LM, batch: Any, tgt: Any, *, epsilon: float, attention_rule: str, tolerance: float) -> LRPAttribution:
    t0 = time.perf_counter()
    names = ["embed"] + [f"blocks.{i}.{p}" for i in range(lm.n_layers) for p in _BLOCK_PARTS]
    store: dict[str, torch.Tensor] = {}
    leaf: dict[str, torch.Tensor] = {}

    def make_leaf(value: torch.Tensor) -> torch.Tensor:
        leaf["x"] = value.detach().requires_grad_(True)
        watch("embed")(leaf["x"])
        return leaf["x"]

    def watch(name: str):
        def read(value: torch.Tensor) -> None:
            if value.requires_grad:
                def on_grad(g: torch.Tensor, _v: torch.Tensor = value) -> None:
                    store[name] = (_v.detach().float() * g.float()).sum(-1)[0].cpu()
                value.register_hook(on_grad)
        return read

    # the watchers are removed on exit of the stack, before the rules
    with lrp_rules(lm, epsilon=epsilon, attention_rule=attention_rule) as ledger, ExitStack() as stack:
        stack.enter_context(lm.hook("embed", edit=make_leaf))
        for name in names[1:]:
            stack.enter_context(lm.hook(name, read=watch(name)))
        with torch.enable_grad():
            out = lm.forward(batch, grad=True)
            if getattr(tgt, "needs_logits", True):
                start = out.logits
                seed, explained = _seed(tgt, lm, out)
            else:                                                    # e.g. a sentence embedding
                start = out.hidden
                seed, explained = _hidden_seed(tgt, out)
            explained_value = float((start.detach().float() * seed.float()).sum())
            picked = seed.abs().sum(-1) > 0                          # [batch, pos]: the seeded rows
            score = (start[picked] * seed[picked]).sum()
            if score.requires_grad:  # an intervention may have cut the output off the input: nothing flows
                torch.autograd.grad(score, leaf["x"], allow_unused=True)
    absorbed = {k: float(v) for k, v in ledger.absorbed.items()}
    head = lm.model.get_output_embeddings() if lm.has_head else None
    if start is out.logits and getattr(head, "bias", None) is not None:
        absorbed["head_bias"] = float((seed.float().sum((0, 1)) * head.bias.detach().float()).sum())
    # No relevance reached the input when an intervention cut it off the output: it is all zero then.
    relevance = store.get("blocks.0.resid_pre", torch.zeros(leaf["x"].shape[1])).numpy().astype(float)
    total = float(relevance.sum())
    error = abs(total - explained_value) / max(abs(explained_value), 1e-12)
    by_layer: dict[str, list[float]] = {}
    for (kind, layer), v in ledger.by_layer.items():
        by_layer.setdefault(kind, [0.0] * lm.n_layers)[layer] += v
    row = batch.row(0)
    diagnostics: dict[str, Any] = {
        "conservation_error": error, "explained": explained, "output_relevance": explained_value,
        "input_relevance": total, "absorbed": absorbed, "absorbed_by_layer": by_layer,
        "unaccounted": explained_value - total - sum(absorbed.values()),
        "absorbed_share": sum(absorbed.values()) / max(abs(explained_value), 1e-12),
        "ledger_error": abs(explained_value - total - sum(absorbed.values())) / max(abs(explained_value), 1e-12),
        "first_token_relevance": float(relevance[0]),
        "first_token_share": float(abs(relevance[0]) / max(np.abs(relevance).sum(), 1e-12)),
        "attention_rule": attention_rule, "epsilon": epsilon,
        "forward_passes": 1, "backward_passes": 1, "seconds": time.perf_counter() - t0,
    }
    if attention_rule == "attnlrp":
        diagnostics["softmax_bias_to_values"] = ledger.moved_to_values
    if attention_rule in ("attnlrp-proportional", "attnlrp-scores"):
        diagnostics["softmax_remainder_redistributed"] = ledger.redistributed
    # A rule that absorbs by design (the published softmax rule) is judged on its ledger: the input
    # relevance plus what it booked as absorbed must make up the output; the absorbed share is shown.
    judged = diagnostics["ledger_error"] if attention_rule in ABSORBING_RULES else error
    if judged > tolerance:
        where = ", ".join(f"{k.replace('_', ' ')} {v:+.3g}" for k, v in absorbed.items() if abs(v) > 1e-6)
        what = "with the absorbed relevance counted" if attention_rule in ABSORBING_RULES else ""
        msg = (f"LRP conservation error {what + ' ' if what else ''}{judged:.1%} exceeds {tolerance:.0%}: the input "
               f"relevance sums to {total:.4g} where the explained output is {explained_value:.4g}. "
               f"Absorbed: {where or 'nothing'}.")
        warnings.warn(msg, CheckWarning, stacklevel=3)
    layer_rel = {n: store[n].numpy() for n in names if n in store}
    tokens = list(row.tokens[0])
    return LRPAttribution(
        model=lm.name, method="lrp", target=tgt.to_dict(), policy=dict(batch.policy), prompt=row.prompts[0],
        tokens=tokens, special=[bool(x) for x in row.special[0]], features=tokens,
        feature_tokens=[[i] for i in range(len(tokens))], scores=relevance, target_value=explained_value,
        granularity="token", diagnostics=diagnostics, layer_relevances=layer_rel,
        # so that il.faithfulness can rebuild the input and rerun the method
        input_ids=row.input_ids[0].tolist(), options={"epsilon": epsilon, "attention_rule": attention_rule})


@register_method("lrp", result=LRPAttribution, demo="interpretlm.attribution.lrp_demo:lrp_section", demo_order=40)
def lrp(lm: LM, inputs: Prompts, target: TargetLike, *, epsilon: float = 1e-6,
        attention_rule: str = "attnlrp-absorbing",
        chat: bool = False, tolerance: float = 0.05, batch_size: int = 1) -> LRPAttribution | list[LRPAttribution]:
    """Layer-wise relevance propagation with AttnLRP rules: one forward and one backward pass.

    Args:
        lm: the model handle (Llama-like, GPT-2, GPT-NeoX or BERT-like).
        inputs: a prompt or token ids (a list gives a list of results, one pass pair each).
        target: ``il.NextToken`` (explains the token's logit), ``il.Contrast`` (the logit
            difference), ``il.PooledEmbedding`` (encoders without a head: cosine with norms
            held constant, or the direction / dim / norm) or any target (explains
            ``logits · ∂target/∂logits``).
        epsilon: stabilizer of the epsilon rule on linear layers.
        attention_rule: ``"attnlrp-absorbing"`` (default: the published softmax rule, as in
            LXT; it ranks tokens best on deletion AOPC and books what the softmax absorbs),
            ``"attnlrp"`` (conservative: the softmax remainder credited to the values),
            ``"attnlrp-proportional"`` / ``"attnlrp-scores"`` (conservative: the remainder
            handed back in proportion to relevance) or ``"cp"`` (attention held constant); see
            :data:`~interpretlm.attribution.lrp_rules.ATTENTION_RULES` and the README's table.
        tolerance: warn when the conservation error exceeds it (for a rule that absorbs, the
            error counting the booked absorbed relevance as accounted).
        batch_size: accepted for the common interface; each prompt is its own pass pair.

    Returns:
        :class:`LRPAttribution`: ``scores [pos]`` (relevance per token), ``target_value``
        (the explained logit), ``diagnostics["conservation_error"]`` (input relevance against
        the explained output, absorbed relevance counted as lost), ``["absorbed"]``,
        ``["absorbed_share"]`` (all that the rules booked as absorbed, as a share of the
        output), ``["ledger_error"]`` (the error counting it as accounted: what the check
        reads for a rule that absorbs) and ``layer_relevance(name) -> [pos]``.

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> lm = il.load()  # doctest: +SKIP
        >>> r = il.attribute(lm, "When Mary and John went to the store, John gave a drink to",  # doctest: +SKIP
        ...                  il.NextToken(" Mary"), method="lrp")
        >>> r.conservation_error, r.top(3), r.layer_relevance("blocks.10.resid_post")  # doctest: +SKIP
    """
    if attention_rule not in ATTENTION_RULES:
        from .lrp_composite import LRPRuleError
        raise LRPRuleError(f"attention_rule must be one of {ATTENTION_RULES}; got {attention_rule!r}.")
    tgt = as_target(target, lm)
    batch = tgt.prepare(lm, lm.tokenize(inputs, chat=chat))
    if batch.input_ids.numel() == 0 or int(batch.lengths.min()) == 0:
        raise EmptyInputError("The prompt has no tokens; give some text or token ids.")
    results = [_lrp_one(lm, batch.row(i), tgt, epsilon=epsilon, attention_rule=attention_rule, tolerance=tolerance)
               for i in range(batch.size)]
    return results[0] if batch.size == 1 else results
