"""Attribution graphs over per-layer transcoders (circuit-tracer's method, for one prompt and one logit).

The **replacement model** runs each block's MLP as its transcoder plus an error node (the MLP's true
output minus the transcoder's, frozen), with attention patterns and norm scales frozen at their
values on the prompt: every remaining map is linear, so the target logit and every active feature's
pre-activation are exact sums of direct contributions from the sources below them: token
embeddings, active features (activation × the direct effect of their decoder write) and error
nodes, plus constant biases. One backward pass per target gives its row of the adjacency matrix
``A[target, source]`` (gradients stop at features: direct effects only).

From ``A``: rows of ``|A|`` normalised to sum 1 give ``Â``; the influence of every node on the logit
is row ``logit`` of ``Â + Â² + … = (I - Â)^-1 - I``. Circuit-tracer's scores: **replacement** is the
share of the logit's influence that ends at token embeddings rather than error nodes; **completeness**
the influence-weighted share of each node's incoming edges that do not come from error nodes (every node
weighted by its influence, the logit by 1; tokens and errors, which have no incoming edges, count as complete).
Features are pruned to those holding ``node_threshold`` of the total influence. The graph's
faithfulness is measured, not assumed: each kept feature is zeroed in the real model at its
position (other features and errors as they are), and the logit's change is compared with the
graph's prediction of that change (the feature's influence × its activation, through ``A``).

Llama-like families (RMS norms) are supported; others raise :class:`FeatureError`.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from ..results import Result
from ..viz.figures import Figure, Graph, Table
from .dictionary import Dictionary, read_mlp_input
from .errors import FeatureError


def _frozen_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention whose probabilities are constants of the graph (linear in the values)."""
    rep = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(rep, dim=1)
    v = value.repeat_interleave(rep, dim=1)
    scores = query @ k.transpose(-1, -2) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if attention_mask is not None:
        scores = scores + attention_mask[..., : k.shape[-2]]
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype).detach()
    return (probs @ v).transpose(1, 2).contiguous(), probs


@dataclass(kw_only=True)
class AttributionGraph(Result):
    """An attribution graph of one prompt's target logit (``il.features.attribution_graph``).

    Attributes:
        tokens: the prompt's tokens; target: the target token's text; logit: its logit.
        nodes: ``{"name", "kind" ("token" / "feature" / "error" / "logit"), "layer", "pos", "feature",
            "activation", "influence"}`` each, in the adjacency's order.
        adjacency: ``[n, n]`` direct contributions ``A[target, source]``.
        kept: names of the nodes kept by pruning.
        replacement_score, completeness_score: circuit-tracer's scores of the whole graph.
        faithfulness: Pearson correlation between predicted and measured logit changes when the
            kept features are zeroed one at a time; ablations: ``[[name, predicted, measured], ...]``.
        linearity_error (in ``diagnostics``): the largest gap between a target's value and the sum of its
            row of ``A`` plus its bias, relative to the sum of the row's magnitudes (float rounding: the
            replacement model is linear).
    """

    tokens: list[str] = field(default_factory=list)
    target_token: str = ""
    logit: float = 0.0
    nodes: list[dict[str, Any]] = field(default_factory=list)
    adjacency: torch.Tensor | None = None
    kept: list[str] = field(default_factory=list)
    replacement_score: float = 0.0
    completeness_score: float = 0.0
    faithfulness: float = float("nan")
    ablations: list[list[Any]] = field(default_factory=list)

    def summary(self) -> str:
        kept = set(self.kept)
        n_kept = sum(n["kind"] == "feature" and n["name"] in kept for n in self.nodes)
        return (f"{n_kept} of {sum(n['kind'] == 'feature' for n in self.nodes)} features kept; replacement "
                f"{self.replacement_score:.3f}, completeness {self.completeness_score:.3f}, faithfulness "
                f"{self.faithfulness:.3f}")

    def figures(self) -> dict[str, Figure]:
        keep = set(self.kept)
        idx = [i for i, n in enumerate(self.nodes) if n["name"] in keep]
        nodes = [{"name": self.nodes[i]["name"], "row": self.nodes[i]["layer"] + 1, "score": self.nodes[i]["influence"],
                  "terminal": self.nodes[i]["kind"] in ("token", "logit")} for i in idx]
        A = self.adjacency
        edges = [{"source": self.nodes[s]["name"], "target": self.nodes[t]["name"], "score": float(A[t, s])}
                 for t in idx for s in idx if s != t and float(A[t, s]) != 0.0]
        return {"graph": Graph(nodes=nodes, edges=edges, faithfulness=None if self.faithfulness != self.faithfulness
                               else self.faithfulness, edge_label="direct contribution"),
                "ablations": Table(["feature", "predicted logit change", "measured logit change"], self.ablations)}


def attribution_graph(lm: Any, prompt: str, target: str | int, transcoders: dict[int, Dictionary] | list[Dictionary], *,
                      node_threshold: float = 0.8, max_ablations: int = 20) -> AttributionGraph:
    """The attribution graph of ``target``'s logit at the prompt's last position, through transcoder features.

    Args:
        lm: the model handle (a Llama-like decoder).
        prompt: the text; target: the next token (a string of one token, or an id).
        transcoders: one transcoder per layer (``{layer: tc}`` or a list in layer order), each mapping
            ``blocks.{l}.mlp.input`` to ``blocks.{l}.mlp``.
        node_threshold: features are kept until they hold this share of the total influence on the logit.
        max_ablations: kept features zeroed one at a time to measure faithfulness.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> tcs = [Dictionary.random(lm.d_model, 32, component=f"blocks.{l}.mlp.input", output=f"blocks.{l}.mlp", k=4,
        ...                          seed=l) for l in range(lm.n_layers)]
        >>> g = attribution_graph(lm, "a b c", 7, tcs)
        >>> g.diagnostics["linearity_error"] < 1e-3
        True
    """
    if lm.family.norm != "rms" or not lm.is_causal:
        raise FeatureError("Attribution graphs support Llama-like decoders (RMS norms) for now.")
    tcs = dict(enumerate(transcoders)) if isinstance(transcoders, (list, tuple)) else dict(transcoders)
    for l, tc in tcs.items():
        tc.check_model(lm)
        if not tc.is_transcoder or tc.layer != l:
            raise FeatureError(f"transcoders[{l}] must be a transcoder of block {l}'s MLP; got {tc!r}.")
    tid = target if isinstance(target, int) else lm.tokenizer(target, add_special_tokens=False)["input_ids"]
    if not isinstance(tid, int):
        if len(tid) != 1:
            raise FeatureError(f"The target must be one token; {target!r} is {len(tid)}.")
        tid = tid[0]
    ids = lm.tokenize(prompt).input_ids[:1]
    P = ids.shape[1]
    layers = sorted(tcs)

    # ---- the clean run: feature activations and error terms
    ins: dict[int, torch.Tensor] = {}
    with ExitStack() as stack, torch.no_grad():
        for l in layers:
            stack.enter_context(read_mlp_input(lm, l, lambda v, _l=l: ins.__setitem__(_l, v[0].float())))
        cache = stack.enter_context(lm.capture([f"blocks.{l}.mlp" for l in layers]))
        lm.forward(ids)
    acts = {l: tcs[l].encode(ins[l]) for l in layers}                                   # [P, n]
    errors = {l: cache[f"blocks.{l}.mlp"][0].float() - tcs[l].decode(acts[l]) for l in layers}   # [P, d]

    # ---- the replacement model, linear in its leaves
    act_leaf = {l: acts[l].clone().requires_grad_(True) for l in layers}
    err_leaf = {l: errors[l].clone().requires_grad_(True) for l in layers}
    emb: dict[str, torch.Tensor] = {}
    pre: dict[int, torch.Tensor] = {}

    def embed_edit(v: torch.Tensor) -> torch.Tensor:
        emb["leaf"] = v.detach().float().requires_grad_(True)
        return emb["leaf"].to(v.dtype)

    def mlp_edit(l: int):
        def edit(v: torch.Tensor) -> torch.Tensor:
            return (tcs[l].decode(act_leaf[l]) + err_leaf[l]).unsqueeze(0).to(v.dtype)
        return edit

    def frozen_norm(module: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        factor = out / x                   # RMSNorm's per-element factor weight / rms(x), frozen
        zero = x == 0
        if zero.any():
            # exact zeros (quantised embeddings hold some) make out / x = 0 / 0: read the factor there from the
            # norm of x with those entries nudged off zero (rms changes by ~1e-12 relative); forward, not
            # __call__, so this hook does not run again
            x_safe = torch.where(zero, 1e-6 * x.abs().amax(-1, keepdim=True).clamp_min(1e-12), x)
            factor = torch.where(zero, module.forward(x_safe.detach()) / x_safe.detach(), factor)
        return x * factor.detach()

    handles = [m.register_forward_hook(frozen_norm) for l in range(lm.n_layers) for m in lm.modules(f"blocks.{l}.norms")]
    handles.append(lm.final_norm_module().register_forward_hook(frozen_norm))
    try:
        with ExitStack() as stack, torch.enable_grad():
            stack.enter_context(lm.attention_implementation(_frozen_attention))
            for l in layers:
                stack.enter_context(read_mlp_input(lm, l, lambda v, _l=l: pre.__setitem__(
                    _l, tcs[_l].pre_activations(v[0]))))
            stack.enter_context(lm.intervene({"embed": embed_edit, **{f"blocks.{l}.mlp": mlp_edit(l) for l in layers}}))
            logits = lm.model(input_ids=ids.to(lm.device), use_cache=False).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()
    logit = logits[tid]

    # ---- nodes: tokens, errors, active features, the logit
    toks = lm.to_str_tokens(ids[0])
    nodes: list[dict[str, Any]] = [{"name": f"tok{p}:{toks[p]!r}", "kind": "token", "layer": -1, "pos": p, "feature": -1,
                                    "activation": 1.0} for p in range(P)]
    nodes += [{"name": f"err L{l}@{p}", "kind": "error", "layer": l, "pos": p, "feature": -1, "activation": 1.0}
              for l in layers for p in range(P)]
    active = [(l, p, int(i)) for l in layers for p in range(P) for i in acts[l][p].nonzero().flatten()]
    nodes += [{"name": f"L{l}F{i}@{p}", "kind": "feature", "layer": l, "pos": p, "feature": i,
               "activation": float(acts[l][p, i])} for l, p, i in active]
    nodes.append({"name": f"logit {lm.tokenizer.decode([tid])!r}", "kind": "logit", "layer": lm.n_layers, "pos": P - 1,
                  "feature": -1, "activation": float(logit.detach())})
    n = len(nodes)
    A = torch.zeros(n, n)
    sources = [emb["leaf"]] + [err_leaf[l] for l in layers] + [act_leaf[l] for l in layers]
    feat_row = {key: P + len(layers) * P + j for j, key in enumerate(active)}
    lin_err = 0.0

    def fill(row: int, value: torch.Tensor, bias: float) -> None:
        nonlocal lin_err
        grads = torch.autograd.grad(value, sources, retain_graph=True, allow_unused=True)
        g_emb = grads[0]
        contrib = torch.zeros(n)
        if g_emb is not None:
            contrib[:P] = (g_emb[0] * emb["leaf"][0].detach()).sum(-1)
        for j, l in enumerate(layers):
            g = grads[1 + j]
            if g is not None:
                contrib[P + j * P: P + (j + 1) * P] = (g * errors[l]).sum(-1)
            g = grads[1 + len(layers) + j]
            if g is not None:
                for (ll, p, i), r in feat_row.items():
                    if ll == l:
                        contrib[r] = g[p, i] * acts[l][p, i]
        A[row] = contrib
        # relative to the contributions' magnitudes: large contributions that cancel carry float32 rounding
        v = float(value.detach())
        gap = abs(v - float(contrib.sum()) - bias) / max(float(contrib.abs().sum()), abs(v), 1.0)
        lin_err = max(lin_err, gap)

    fill(n - 1, logit, 0.0)
    for (l, p, i), r in feat_row.items():
        fill(r, pre[l][p, i], float(tcs[l].b_enc[i]))

    # ---- influence, scores, pruning
    absA = A.abs()
    An = absA / absA.sum(1, keepdim=True).clamp_min(1e-12)
    B = torch.linalg.inv(torch.eye(n) - An) - torch.eye(n)
    infl = B[n - 1].clone()
    infl[n - 1] = 1.0
    err_idx = torch.arange(P, P + len(layers) * P)
    tok_idx = torch.arange(P)
    to_tok, to_err = float(B[n - 1, tok_idx].sum()), float(B[n - 1, err_idx].sum())
    replacement = to_tok / max(to_tok + to_err, 1e-12)
    incoming_ok = 1 - An[:, err_idx].sum(1)
    # circuit-tracer's compute_graph_scores: every node weighted by its influence (the logit by 1); tokens and
    # error nodes have no incoming edges and count as complete
    weights = infl.clone()
    completeness = float((weights * incoming_ok).sum() / weights.sum().clamp_min(1e-12))
    for k, node in enumerate(nodes):
        node["influence"] = float(infl[k])
    feat_idx = sorted(feat_row.values(), key=lambda r: -float(infl[r]))
    total = sum(float(infl[r]) for r in feat_idx)
    kept_feats, acc = [], 0.0
    for r in feat_idx:
        if total <= 0 or acc >= node_threshold * total:
            break
        kept_feats.append(r)
        acc += float(infl[r])
    kept = [nodes[k]["name"] for k in range(P)] + [nodes[r]["name"] for r in kept_feats] + [nodes[n - 1]["name"]]

    # ---- faithfulness: zero each kept feature in the real model; predicted change from the graph
    # (the total effect through A: the feature's direct edge to the logit and its paths through later features)
    act = torch.tensor([nd["activation"] if nd["kind"] == "feature" else 1.0 for nd in nodes])
    M = A / act.clamp_min(1e-12).unsqueeze(0)             # per unit of each source's activation
    M[:, n - 1] = 0.0
    T = torch.linalg.inv(torch.eye(n) - M)                # total effects through the (linear) replacement model
    ablations = []
    base = float(logit)
    for r in kept_feats[:max_ablations]:
        l, p, i = nodes[r]["layer"], nodes[r]["pos"], nodes[r]["feature"]
        seen: list[torch.Tensor] = []

        def edit(v: torch.Tensor, _l=l, _p=p, _i=i) -> torch.Tensor:
            x = seen.pop()
            out = v.clone()
            out[:, _p] = out[:, _p] - (tcs[_l].encode(x[:, _p])[..., _i:_i + 1] * tcs[_l].direction(_i)).to(v.dtype)
            return out
        with torch.no_grad(), read_mlp_input(lm, l, seen.append), lm.intervene({f"blocks.{l}.mlp": edit}):
            measured = float(lm.forward(ids).logits[0, -1, tid]) - base
        # zeroing the feature removes its activation a: the graph predicts -a times its total effect per unit
        predicted = -float(act[r] * T[n - 1, r])
        ablations.append([nodes[r]["name"], predicted, measured])
    if len(ablations) >= 2:
        pr = torch.tensor([a[1] for a in ablations])
        me = torch.tensor([a[2] for a in ablations])
        faith = float(torch.corrcoef(torch.stack([pr, me]))[0, 1]) if pr.std() > 0 and me.std() > 0 else float("nan")
    else:
        faith = float("nan")
    g = AttributionGraph(tokens=toks, target_token=lm.tokenizer.decode([tid]), logit=base, nodes=nodes,
                         adjacency=A, kept=kept, replacement_score=replacement, completeness_score=completeness,
                         faithfulness=faith, ablations=ablations)
    g.diagnostics = {"linearity_error": lin_err, "active_features": len(active), "backward_passes": len(active) + 1}
    return g


__all__ = ["AttributionGraph", "attribution_graph"]
