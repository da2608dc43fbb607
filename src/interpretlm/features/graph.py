"""Attribution graphs over per-layer transcoders (circuit-tracer's method, for one prompt and one logit).

The **replacement model** runs each block's MLP as its transcoder plus an error node (the MLP's true
output minus the transcoder's, frozen; a block without a transcoder is all error), with attention
patterns, norm scales and the activations of masked-LM heads frozen at their values on the prompt
(:mod:`.linearize`): every remaining map is affine, so the target (a logit, or a difference of two for
``il.Contrast``) and every active feature's pre-activation are exact sums of direct contributions from
the sources below them — token embeddings, active features (activation × the direct effect of their
decoder write) and error nodes — plus a constant (biases, position embeddings, ``b_dec``), measured by
a pass with every source at zero. One backward pass per target gives its row of the adjacency matrix
``A[target, source]`` (gradients stop at features: direct effects only).

From ``A``: rows of ``|A|`` normalised to sum 1 give ``Â``; the influence of every node on the logit
is row ``logit`` of ``Â + Â² + … = (I - Â)^-1 - I``. Circuit-tracer's scores: **replacement** is the
share of the logit's influence that ends at token embeddings rather than error nodes; **completeness**
the influence-weighted share of each node's incoming edges that do not come from error nodes (every node
weighted by its influence, the logit by 1; tokens and errors, which have no incoming edges, count as complete).
Features are pruned to those holding ``node_threshold`` of the total influence.

The graph's faithfulness is measured, not assumed, two ways:

* **edges** (the check, ``edge_error``): each of the ``max_edges`` strongest edges out of a kept feature
  is patched in the model — the source feature zeroed at its position, every other feature and every
  error node held at its value on the prompt, attention and norms *not* frozen — and the target's
  measured change is compared with the edge's weight (the graph predicts ``-A[target, source]``):
  ``edge_error = Σ|measured - predicted| / Σ|predicted|``;
* **nodes**: each kept feature is zeroed in the model (other features and errors recomputed) and the
  logit's change compared with the graph's total effect (``faithfulness``: their correlation).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..registry import CheckSpec, register
from ..results import Result
from ..targets import Contrast, NextToken, Target, prediction_positions
from ..viz.figures import Figure, Graph, Table
from .dictionary import Dictionary
from .errors import FeatureError
from .linearize import Frozen, load_transcoders, mlp_inputs


@dataclass(kw_only=True)
class AttributionGraph(Result):
    """An attribution graph of one prompt's target logit (``il.features.attribution_graph``).

    Attributes:
        tokens: the prompt's tokens; target_token: the target's text (``" Mary"``, ``" Mary" - " John"``);
        logit: its value (a logit, or a difference of two); position: where it is read.
        nodes: ``{"name", "kind" ("token" / "feature" / "error" / "logit"), "layer", "pos", "feature",
            "activation", "influence"}`` each, in the adjacency's order.
        adjacency: ``[n, n]`` direct contributions ``A[target, source]``.
        kept: names of the nodes kept by pruning.
        replacement_score, completeness_score: circuit-tracer's scores of the whole graph.
        faithfulness: Pearson correlation between predicted and measured logit changes when the
            kept features are zeroed one at a time; ablations: ``[[name, predicted, measured], ...]``.
        edges_checked: ``[[source, target, predicted, measured], ...]`` the strongest edges patched in the model.
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
    position: int = -1
    edges_checked: list[list[Any]] = field(default_factory=list)

    nan_marks: ClassVar[tuple[str, ...]] = ("faithfulness",)   # NaN: fewer than two kept features to correlate

    def title(self) -> str:
        return f"Attribution graph — {self.target_token}"

    def summary(self) -> str:
        kept = set(self.kept)
        n_kept = sum(n["kind"] == "feature" and n["name"] in kept for n in self.nodes)
        return (f"{n_kept} of {sum(n['kind'] == 'feature' for n in self.nodes)} features kept; replacement "
                f"{self.replacement_score:.3f}, completeness {self.completeness_score:.3f}, faithfulness "
                f"{self.faithfulness:.3f}" + (f", edge error {self.diagnostics['edge_error']:.3f} over "
                                              f"{len(self.edges_checked)} patched edges"
                                              if self.diagnostics.get("edge_error") is not None else ""))

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
                "edges": Table(["source", "target", "edge (predicted change when the source is zeroed)",
                                "measured change"], self.edges_checked),
                "ablations": Table(["feature", "predicted logit change", "measured logit change"], self.ablations)}


def _readout(lm: Any, target: Any) -> tuple[list[tuple[int, float]], str]:
    """The target as ``[(token id, coefficient)]`` over the logits, and its text: a token (str or id) or
    ``il.NextToken`` is its logit, ``il.Contrast(a, b)`` the difference of two (the graph explains logits:
    a log-probability is not linear in the residual stream even with the norms frozen)."""
    if isinstance(target, (str, int)) and not isinstance(target, bool):
        target = NextToken(target)
    if isinstance(target, NextToken):
        tid = target.bind(lm).token_id
        return [(tid, 1.0)], lm.tokenizer.decode([tid])
    if isinstance(target, Contrast):
        a, b = target.bind(lm).ids
        return [(a, 1.0), (b, -1.0)], f"{lm.tokenizer.decode([a])!r} - {lm.tokenizer.decode([b])!r}"
    raise FeatureError(f"An attribution graph explains a logit (a token, il.NextToken) or a difference of two "
                       f"(il.Contrast); got {type(target).__name__ if isinstance(target, Target) else repr(target)}.")


def attribution_graph(lm: Any, prompt: Any, target: Any, transcoders: Any, *, node_threshold: float = 0.8,
                      max_ablations: int = 20, max_edges: int = 10) -> AttributionGraph:
    """The attribution graph of ``target``'s logit at the prompt's prediction position, through transcoder features.

    Args:
        lm: the model handle (a model with a language-model head: decoders read the last position,
            masked LMs their ``[MASK]``).
        prompt: the text (or token ids).
        target: the next token (a string of one token, an id or ``il.NextToken``: its logit), or
            ``il.Contrast(a, b)`` (the logit difference).
        transcoders: per-layer transcoders (``{layer: tc}``, a list in layer order, or a folder of
            per-layer sub-folders), each mapping ``blocks.{l}.mlp.input`` to ``blocks.{l}.mlp``; blocks
            without one run their MLP as an error node.
        node_threshold: features are kept until they hold this share of the total influence on the logit.
        max_ablations: kept features zeroed one at a time to measure faithfulness.
        max_edges: the strongest edges out of kept features patched in the model (the check).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> tcs = [Dictionary.random(lm.d_model, 32, component=f"blocks.{l}.mlp.input", output=f"blocks.{l}.mlp", k=4,
        ...                          seed=l) for l in range(lm.n_layers)]
        >>> g = attribution_graph(lm, "a b c", 7, tcs)
        >>> g.diagnostics["linearity_error"] < 1e-3
        True
    """
    if not lm.has_head:
        raise FeatureError("An attribution graph explains a logit; this model has no language-model head.")
    for name, v in (("max_ablations", max_ablations), ("max_edges", max_edges)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise FeatureError(f"{name} must be a non-negative int; got {v!r}.")
    if not 0 < float(node_threshold) <= 1:
        raise FeatureError(f"node_threshold must be in (0, 1]; got {node_threshold!r}.")
    tcs = load_transcoders(transcoders)
    for tc in tcs.values():
        tc.check_model(lm)
    readout, label = _readout(lm, target)
    batch = lm.tokenize(prompt)
    if batch.input_ids.shape[0] != 1:
        raise FeatureError("attribution_graph explains one prompt; il.attribution_graph takes a list of them.")
    pos = int(prediction_positions(lm, batch)[0])
    P = int(batch.attention_mask[0].sum())
    layers = sorted(tcs)
    all_layers = list(range(lm.n_layers))

    def value_of(logits: torch.Tensor) -> torch.Tensor:
        row = logits[0, pos].float()
        return sum(c * row[t] for t, c in readout)

    # ---- the clean run: MLP inputs and outputs, feature activations and error terms
    ins: dict[int, torch.Tensor] = {}
    with torch.no_grad(), mlp_inputs(lm, layers, ins), lm.capture([f"blocks.{l}.mlp" for l in all_layers]) as cache:
        base = float(value_of(lm.forward(batch).logits))
    outs = {l: cache[f"blocks.{l}.mlp"][0, :P].float() for l in all_layers}
    acts = {l: tcs[l].encode(ins[l][:P].float()) for l in layers}                          # [P, n]
    errors = {l: outs[l] - (tcs[l].decode(acts[l]) if l in tcs else 0.0) for l in all_layers}   # [P, d]

    # ---- the replacement model, affine in its leaves (recorded pass with gradients, then the constants)
    frozen = Frozen(lm)
    act_leaf = {l: acts[l].clone().requires_grad_(True) for l in layers}
    err_leaf = {l: errors[l].clone().requires_grad_(True) for l in all_layers}
    emb: dict[str, torch.Tensor] = {}
    pre: dict[int, torch.Tensor] = {}
    zero = {"on": False}

    def embed_edit(v: torch.Tensor) -> torch.Tensor:
        if zero["on"]:
            return torch.zeros_like(v)
        emb["leaf"] = v[:, :P].detach().float().requires_grad_(True)
        return torch.cat([emb["leaf"].to(v.dtype), v[:, P:].detach()], 1)

    def mlp_edit(l: int):
        def edit(v: torch.Tensor) -> torch.Tensor:
            a = torch.zeros_like(act_leaf[l]) if zero["on"] and l in tcs else act_leaf.get(l)
            e = torch.zeros_like(err_leaf[l]) if zero["on"] else err_leaf[l]
            new = (tcs[l].decode(a) + e) if l in tcs else e
            return torch.cat([new.unsqueeze(0).to(v.dtype), v[:, P:].detach()], 1)
        return edit

    def run() -> torch.Tensor:
        with ExitStack() as stack:
            stack.enter_context(mlp_inputs(lm, layers, pre))
            stack.enter_context(lm.intervene({"embed": embed_edit, **{f"blocks.{l}.mlp": mlp_edit(l) for l in all_layers}}))
            return value_of(lm.forward(batch).logits)

    with torch.enable_grad(), frozen.active(replay=False):
        value = run()
        pre_grad = {l: tcs[l].pre_activations(pre[l][:P]) for l in layers}               # [P, n], graph tensors
    zero["on"] = True
    with torch.no_grad(), frozen.active(replay=True):
        bias_value = float(run())
        bias_pre = {l: tcs[l].pre_activations(pre[l][:P]) for l in layers}

    # ---- nodes: tokens, errors, active features, the logit
    toks = lm.to_str_tokens(batch.input_ids[0, :P])
    nodes: list[dict[str, Any]] = [{"name": f"tok{p}:{toks[p]!r}", "kind": "token", "layer": -1, "pos": p, "feature": -1,
                                    "activation": 1.0} for p in range(P)]
    nodes += [{"name": f"err L{l}@{p}", "kind": "error", "layer": l, "pos": p, "feature": -1, "activation": 1.0}
              for l in all_layers for p in range(P)]
    active = [(l, p, int(i)) for l in layers for p in range(P) for i in acts[l][p].nonzero().flatten()]
    nodes += [{"name": f"L{l}F{i}@{p}", "kind": "feature", "layer": l, "pos": p, "feature": i,
               "activation": float(acts[l][p, i])} for l, p, i in active]
    nodes.append({"name": f"logit {label}", "kind": "logit", "layer": lm.n_layers, "pos": pos, "feature": -1,
                  "activation": base})
    n = len(nodes)
    A = torch.zeros(n, n)
    first_feat = P + len(all_layers) * P
    feat_row = {key: first_feat + j for j, key in enumerate(active)}
    by_layer = {l: [(p, i, feat_row[(ll, p, i)]) for ll, p, i in active if ll == l] for l in layers}
    by_layer = {l: (torch.tensor([x[0] for x in v], dtype=torch.long), torch.tensor([x[1] for x in v], dtype=torch.long),
                    torch.tensor([x[2] for x in v], dtype=torch.long)) for l, v in by_layer.items() if v}
    sources = [emb["leaf"]] + [err_leaf[l] for l in all_layers] + [act_leaf[l] for l in layers]
    lin_err = 0.0

    def fill(row: int, value: torch.Tensor, bias: float) -> None:
        nonlocal lin_err
        grads = torch.autograd.grad(value, sources, retain_graph=True, allow_unused=True)
        contrib = torch.zeros(n)
        if grads[0] is not None:
            contrib[:P] = (grads[0][0] * emb["leaf"][0].detach()).sum(-1)
        for j, l in enumerate(all_layers):
            g = grads[1 + j]
            if g is not None:
                contrib[P + j * P: P + (j + 1) * P] = (g * errors[l]).sum(-1)
        for j, l in enumerate(layers):
            g = grads[1 + len(all_layers) + j]
            if g is not None and l in by_layer:
                ps, fs, rows = by_layer[l]
                contrib[rows] = g[ps, fs] * acts[l][ps, fs]
        A[row] = contrib
        # relative to the contributions' magnitudes: large contributions that cancel carry float32 rounding
        v = float(value.detach())
        gap = abs(v - float(contrib.sum()) - bias) / max(float(contrib.abs().sum()), abs(v), 1.0)
        lin_err = max(lin_err, gap)

    fill(n - 1, value, bias_value)
    for (l, p, i), r in feat_row.items():
        fill(r, pre_grad[l][p, i], float(bias_pre[l][p, i]))

    # ---- influence, scores, pruning
    absA = A.abs()
    An = absA / absA.sum(1, keepdim=True).clamp_min(1e-12)
    B = torch.linalg.inv(torch.eye(n) - An) - torch.eye(n)
    infl = B[n - 1].clone()
    infl[n - 1] = 1.0
    err_idx = torch.arange(P, first_feat)
    to_tok, to_err = float(B[n - 1, :P].sum()), float(B[n - 1, err_idx].sum())
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

    # ---- faithfulness of nodes: zero each kept feature in the real model; predicted change from the graph
    # (the total effect through A: the feature's direct edge to the logit and its paths through later features)
    act = torch.tensor([nd["activation"] if nd["kind"] == "feature" else 1.0 for nd in nodes])
    M = A / act.clamp_min(1e-12).unsqueeze(0)             # per unit of each source's activation
    M[:, n - 1] = 0.0
    T = torch.linalg.inv(torch.eye(n) - M)                # total effects through the (linear) replacement model
    ablations = []
    for r in kept_feats[:max_ablations]:
        l, p, i = nodes[r]["layer"], nodes[r]["pos"], nodes[r]["feature"]
        seen: dict[int, torch.Tensor] = {}

        def edit(v: torch.Tensor, _l=l, _p=p, _i=i) -> torch.Tensor:
            out = v.clone()
            out[0, _p] = out[0, _p] - (tcs[_l].encode(seen[_l][_p])[_i] * tcs[_l].direction(_i)).to(v.dtype)
            return out
        with torch.no_grad(), mlp_inputs(lm, [l], seen), lm.intervene({f"blocks.{l}.mlp": edit}):
            measured = float(value_of(lm.forward(batch).logits)) - base
        # zeroing the feature removes its activation a: the graph predicts -a times its total effect per unit
        ablations.append([nodes[r]["name"], -float(act[r] * T[n - 1, r]), measured])
    faith = float("nan")
    if len(ablations) >= 2:
        pr, me = torch.tensor([a[1] for a in ablations]), torch.tensor([a[2] for a in ablations])
        if pr.std() > 0 and me.std() > 0:
            faith = float(torch.corrcoef(torch.stack([pr, me]))[0, 1])

    # ---- faithfulness of edges: patch the source feature with everything else held (the check)
    kept_rows = set(kept_feats) | {n - 1}
    edges = sorted(((t, s) for s in kept_feats for t in kept_rows if t != s and float(A[t, s]) != 0.0),
                   key=lambda ts: -abs(float(A[ts[0], ts[1]])))[:max_edges]
    checked = [[nodes[s]["name"], nodes[t]["name"], -float(A[t, s]),
                _patched_change(lm, batch, tcs, acts, errors, ins, value_of, nodes[s], nodes[t], base, P)] for t, s in edges]
    edge_error = (sum(abs(m - p) for _, _, p, m in checked) / max(sum(abs(p) for _, _, p, _ in checked), 1e-12)
                  if checked else None)
    g = AttributionGraph(tokens=toks, target_token=label, logit=base, nodes=nodes, adjacency=A, kept=kept,
                         replacement_score=replacement, completeness_score=completeness, faithfulness=faith,
                         ablations=ablations, position=pos, edges_checked=checked)
    g.diagnostics = {"linearity_error": lin_err, "edge_error": edge_error, "active_features": len(active),
                     "backward_passes": len(active) + 1, "patched_edges": len(checked), "layers": layers}
    return g


def _patched_change(lm: Any, batch: Any, tcs: dict[int, Dictionary], acts: dict[int, torch.Tensor],
                    errors: dict[int, torch.Tensor], clean_in: dict[int, torch.Tensor], value_of: Any, source: dict[str, Any], target: dict[str, Any],
                    base: float, P: int) -> float:
    """The target's change in the model when ``source`` is zeroed and every other feature and error node is held
    at its value on the prompt (only the direct path is left; attention and norms are the model's own)."""
    ls, ps, fs = source["layer"], source["pos"], source["feature"]

    def edit(l: int):
        def fn(v: torch.Tensor) -> torch.Tensor:
            new = errors[l]
            if l in tcs:
                f = acts[l].clone()
                if l == ls:
                    f[ps, fs] = 0.0
                new = tcs[l].decode(f) + new
            out = v.clone()
            out[0, :P] = new.to(v.dtype)
            return out
        return fn
    ins: dict[int, torch.Tensor] = {}
    read = [target["layer"]] if target["kind"] == "feature" else []
    with torch.no_grad(), mlp_inputs(lm, read, ins), \
            lm.intervene({f"blocks.{l}.mlp": edit(l) for l in range(lm.n_layers)}):
        value = float(value_of(lm.forward(batch).logits))
    if target["kind"] != "feature":
        return value - base
    lt, pt, ft = target["layer"], target["pos"], target["feature"]
    return float(tcs[lt].pre_activations(ins[lt][pt])[ft] - tcs[lt].pre_activations(clean_in[lt][pt])[ft])


@register("attribution_graph", verb="attribution_graph", family="features", takes="prompt", result=AttributionGraph,
          summary="attribution graph through per-layer transcoders: replacement and completeness scores, edges checked "
                  "by patching", inputs=("prompt",),
          check=CheckSpec("edge_error", 0.2, advice="the strongest edges, patched in the model with everything else "
                          "held, moved their targets unlike the graph predicts: attention patterns or norms change a "
                          "lot when these features are removed (read the edges table)"))
def attribution_graph_method(lm: Any, prompt: Any, target: Any = None, *, transcoders: str | list | dict,
                             node_threshold: float = 0.8, max_edges: int = 10,
                             max_ablations: int = 20) -> AttributionGraph:
    """``il.attribution_graph``: the attribution graph of a target logit through per-layer transcoders.

    The registered form of :func:`attribution_graph` (one result per prompt, provenance, the check
    ``edge_error``: the strongest edges patched in the model against their weights).

    Args:
        lm: the model handle; prompt: the text (a list gives one graph per prompt).
        target: ``il.NextToken(" Mary")`` (its logit) or ``il.Contrast(" Mary", " John")``.
        transcoders: per-layer transcoders: a folder of per-layer sub-folders (SAELens or sparsify
            format), a list in layer order, or ``{layer: transcoder}``.
        node_threshold, max_edges, max_ablations: see :func:`attribution_graph`.

    Returns:
        :class:`AttributionGraph`.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> tcs = [Dictionary.random(lm.d_model, 32, component=f"blocks.{l}.mlp.input", output=f"blocks.{l}.mlp",
        ...                          k=4, seed=l) for l in range(lm.n_layers)]
        >>> g = il.attribution_graph(lm, "a b c", il.Contrast(5, 7), transcoders=tcs)
        >>> g.check.name, 0.0 <= g.replacement_score <= 1.0
        ('edge_error', True)
    """
    return attribution_graph(lm, prompt, target, transcoders, node_threshold=node_threshold,
                             max_ablations=max_ablations, max_edges=max_edges)


__all__ = ["AttributionGraph", "attribution_graph", "attribution_graph_method"]
