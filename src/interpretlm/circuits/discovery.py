"""Automatic circuit discovery with edge attribution patching (EAP, EAP-IG).

The model is read as a graph whose nodes are the input embeddings, every attention head,
every MLP and the logits; an edge ``u -> v`` is ``u``'s write into the residual stream as
read by ``v`` (every later node reads the residual stream). Its score (Syed et al., 2023;
Hanna et al., 2024) is

    ``(u_clean - u_corrupt) · d metric / d (v's input)``

summed over positions and averaged over prompts, where the gradient flows through ``v``
alone: for a head, a vector-Jacobian product through that head only (batched over the
heads of a layer); for an MLP, through the MLP only; for the logits, the gradient of the
last residual stream. EAP takes gradients on the corrupted run; EAP-IG averages them over
inputs interpolated from corrupted to clean. Scores are divided by ``clean - corrupt``.

The circuit keeps the highest-scoring edges (``keep``: a fraction or a count) and the
nodes they touch. Its ``faithfulness`` is measured, not estimated: the clean prompts are
run with every head and MLP outside the circuit set to its corrupted value,
``(circuit - corrupt) / (clean - corrupt)``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import CheckWarning
from ..registry import CheckSpec, register
from ..results import Result
from ..targets import TargetLike
from ..replay import select_rows
from ..viz.figures import Figure, Graph, Heatmap, Table, Text
from .metric import NoiseWarning, normaliser
from .pairs import tokenize_pairs
from .sweep import PatchingError

if TYPE_CHECKING:
    from ..datasets.base import CircuitDataset
    from ..model import LM

METHODS = ("eap", "eap_ig")
DRAWN_NODES = 30  # the graph figure draws this many nodes first (a legible picture), the rest on request


@dataclass(kw_only=True)
class Circuit(Result):
    """A circuit found by edge attribution.

    Attributes:
        nodes: kept nodes, ``{"name", "kind", "layer", "head", "score"}`` (``kind``: input,
            head, mlp, logits; ``score``: the node's total attribution).
        edges: kept edges, ``{"from", "to", "score"}``, best first.
        head_scores: ``[layer, head]`` attribution of every head (sum over its out-edges).
        mlp_scores: ``[layer]`` attribution of every MLP.
        n_edges: edges in the full graph.
        keep: the requested share (fraction) or count of edges.
        faithfulness: ``(circuit - corrupt) / (clean - corrupt)``, measured.
        circuit_value, clean_value, corrupt_value: the metric (mean over prompts).
        n_layers, n_heads: model shape, for drawing.
        drawn_faithfulness: the faithfulness, measured the same way, of the subgraph the graph
            figure draws first (:data:`DRAWN_NODES` nodes, ``Graph.prune``); ``None`` when the
            whole circuit is drawn.
        level_faithfulness: that of each further level the figure's "show more" control draws
            (``Graph.levels_for``: 60, then 120 nodes), when smaller than the circuit.
    """

    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    head_scores: Any = None
    mlp_scores: Any = None
    n_edges: int = 0
    keep: float = 0.02
    faithfulness: float = float("nan")
    circuit_value: float = 0.0
    clean_value: float = 0.0
    corrupt_value: float = 0.0
    n_layers: int = 0
    n_heads: int = 0
    drawn_faithfulness: float | None = None
    level_faithfulness: list[float] = field(default_factory=list)

    @property
    def heads(self) -> list[tuple[int, int]]:
        """The kept heads as ``(layer, head)``."""
        return [(n["layer"], n["head"]) for n in self.nodes if n["kind"] == "head"]

    @property
    def mlps(self) -> list[int]:
        """The kept MLP layers."""
        return [n["layer"] for n in self.nodes if n["kind"] == "mlp"]

    def top_heads(self, k: int = 5) -> list[tuple[tuple[int, int], float]]:
        """The ``k`` heads of the whole model with the largest absolute attribution."""
        s = np.asarray(self.head_scores, dtype=float)
        order = np.argsort(-np.abs(s).ravel())[:k]
        return [((int(i // s.shape[1]), int(i % s.shape[1])), float(s.ravel()[i])) for i in order]

    def summary(self) -> str:
        return (f"model {self.model} · {self.method} · kept {len(self.edges)} of {self.n_edges} edges, "
                f"{len(self.heads)} heads, {len(self.mlps)} MLPs · faithfulness {self.faithfulness:.3f}")

    def figures(self) -> dict[str, Figure]:
        """``"faithfulness"`` (text), ``"graph"`` (the circuit: one row per attention layer and per
        MLP, input at the bottom, logits on top), ``"top_edges"`` (the 30 best) and
        ``"head_scores"`` (a :class:`Heatmap` of every head's attribution)."""
        rows = {n["name"]: int(_order(n["name"], self.n_layers)) for n in self.nodes}
        top = 2 * self.n_layers
        graph = Graph([{"name": n["name"], "row": rows[n["name"]], "score": n["score"],
                        "terminal": rows[n["name"]] in (-1, top)} for n in self.nodes],
                      [{"source": e["from"], "target": e["to"], "score": e["score"]} for e in self.edges
                       if e["from"] in rows and e["to"] in rows], title="", max_nodes=DRAWN_NODES,
                      faithfulness=self.faithfulness, pruned_faithfulness=self.drawn_faithfulness,
                      edge_label="edge attribution", level_faithfulness=list(self.level_faithfulness))
        hs = np.asarray(self.head_scores, dtype=float)
        return {
            "faithfulness": Text(f"faithfulness {self.faithfulness:.3f} (circuit {self.circuit_value:.3f}, clean "
                                 f"{self.clean_value:.3f}, corrupted {self.corrupt_value:.3f})"),
            "graph": graph,
            "top_edges": Table(["from", "to", "score"],
                               [(e["from"], e["to"], float(e["score"])) for e in self.edges[:30]], title="Top edges"),
            "head_scores": Heatmap([f"L{l}" for l in range(hs.shape[0])], [f"H{h}" for h in range(hs.shape[1])],
                                   hs.tolist(), label="head attribution", title="Head attribution (all heads)",
                                   unit="fraction of clean − corrupted"),
        }


def _node_names(L: int, H: int) -> tuple[list[str], list[str]]:
    ups = ["input"] + [n for l in range(L) for n in [f"L{l}H{h}" for h in range(H)] + [f"mlp{l}"]]
    downs = [n for l in range(L) for n in [f"L{l}H{h}" for h in range(H)] + [f"mlp{l}"]] + ["logits"]
    return ups, downs


def _order(name: str, L: int) -> float:
    if name == "input":
        return -1
    if name == "logits":
        return 2 * L
    if name.startswith("mlp"):
        return 2 * int(name[3:]) + 1
    return 2 * int(name[1:].split("H")[0])


def _edge_scores(lm: "LM", batch, target, deltas: dict[str, Any], real: torch.Tensor, *,
                 alphas: list[float] | None, embeds: tuple, batch_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor, set[int]]:
    """Edge scores, summed over prompts and positions: ``[ups, downs]``.

    Streams over chunks of rows: each chunk's upstream writes (clean minus corrupted, through
    each head's share of the output projection) are contracted at once with every downstream
    node's input gradient (through that node alone), so no ``[node, batch, pos, d_model]``
    tensor of the whole dataset is ever held. Also returns each head's and MLP's own
    attribution ``delta · d metric / d output`` (``[layer * (heads + 1)]``, for the conservation
    check) and the layers whose MLP runs in parallel with attention.
    """
    L, H = lm.n_layers, lm.n_heads
    names = [f"blocks.{l}.resid_pre" for l in range(L)] + [f"blocks.{l}.attn.heads" for l in range(L)] + \
            [f"blocks.{l}.attn" for l in range(L)] + [f"blocks.{l}.mlp" for l in range(L)] + \
            [f"blocks.{L - 1}.resid_post"]
    steps = alphas or [None]
    rows_all = [(k, b) for k in range(len(steps)) for b in range(batch.size)]
    ups, downs = _node_names(L, H)
    scores = torch.zeros(len(ups), len(downs), dtype=torch.float64)
    direct = torch.zeros(L * (H + 1), dtype=torch.float64)
    parallel: set[int] = set()
    for c in range(0, len(rows_all), batch_size):
        chunk = rows_all[c:c + batch_size]
        rows = torch.tensor([b for _, b in chunk])
        sub = select_rows(batch, rows)
        m = real[rows]  # [R, pos, 1]
        writes = [deltas["input"][rows] * m]
        for l in range(L):
            writes += list(lm.head_writes(l, deltas["heads"][l][rows]) * m)
            writes.append(deltas["mlp"][l][rows] * m)
        U = torch.stack(writes).flatten(1).float()  # [ups, R * pos * d_model]
        del writes

        def score(down: str, g: torch.Tensor | None) -> None:
            if g is not None:
                scores[:, downs.index(down)] += (U @ g.detach().flatten().float()).double() / len(steps)

        edits = {}
        if alphas:
            a = torch.tensor([steps[k] for k, _ in chunk]).view(-1, 1, 1)
            lo, hi = embeds
            mixed = lo[rows] + a * (hi[rows] - lo[rows])
            edits["embed"] = lambda x, mixed=mixed: mixed.to(x.device, x.dtype)
        with torch.enable_grad(), lm.intervene(edits), lm.capture(names, grad=True) as cache:
            v = target(lm.forward(sub, grad=True))
            final = f"blocks.{L - 1}.resid_post"
            heads = [cache[f"blocks.{l}.attn.heads"] for l in range(L)]
            mlps = [cache[f"blocks.{l}.mlp"] for l in range(L)]
            g_all = torch.autograd.grad(v.sum(), heads + mlps + [cache[final]], retain_graph=True, allow_unused=True)
            g_heads, g_mlps = g_all[:L], g_all[L:2 * L]
            score("logits", g_all[2 * L])
            for l in range(L):
                resid = cache[f"blocks.{l}.resid_pre"]
                gh, gm = g_heads[l], g_mlps[l]
                base = l * (H + 1)
                if gh is not None:
                    own = (deltas["heads"][l][rows] * gh.detach()).sum(-1) * m  # [R, pos, H]
                    direct[base:base + H] += own.sum((0, 1)).double() / len(steps)
                    # one vector-Jacobian product per head: the gradient through that head only
                    for h in range(H):
                        go = torch.zeros_like(gh)
                        go[:, :, h] = gh[:, :, h]
                        (gr,) = torch.autograd.grad(heads[l], resid, go, retain_graph=True, allow_unused=True)
                        score(f"L{l}H{h}", gr)
                if gm is not None:
                    direct[base + H] += float(((deltas["mlp"][l][rows] * gm.detach()).sum(-1, keepdim=True) * m).sum()
                                              ) / len(steps)
                    (gr,) = torch.autograd.grad(mlps[l], cache[f"blocks.{l}.attn"], gm, retain_graph=True,
                                                allow_unused=True)
                    if gr is None:  # parallel attention and MLP (GPT-NeoX): the MLP reads resid_pre
                        parallel.add(l)
                        (gr,) = torch.autograd.grad(mlps[l], resid, gm, retain_graph=True, allow_unused=True)
                    score(f"mlp{l}", gr)
    return scores, direct, parallel


@register("discover_circuit", family="circuit analysis", takes="pairs", result=Circuit, target="optional",
          inputs=("ds",), cli_input="interpretlm.datasets:from_spec",
          summary="automatic circuit discovery (EAP / EAP-IG edges) with the circuit's faithfulness",
          check=CheckSpec("faithfulness", 0.5, higher_is_better=True, read=lambda r: r.faithfulness,
                          advice="keep more edges (keep=) or check the dataset."))
def discover_circuit(lm: "LM", ds: "CircuitDataset | None" = None, *, clean: Any = None, corrupted: Any = None,
                     target: TargetLike | None = None, estimator: str = "eap_ig", keep: float | int = 0.02,
                     steps: int = 5, batch_size: int = 16) -> Circuit:
    """Find the edges that carry the clean-vs-corrupted difference, and measure the circuit.

    Args:
        lm: the model.
        ds: a :class:`~interpretlm.datasets.CircuitDataset` (or give ``clean``,
            ``corrupted`` and ``target``).
        estimator: ``"eap_ig"`` (default) or ``"eap"``.
        keep: share of edges kept (a float in ``(0, 1]``) or their number (an int).
        steps: interpolation points of EAP-IG.
        batch_size: rows per forward / backward pass.

    Returns:
        :class:`Circuit` with ``nodes``, ``edges``, ``faithfulness`` and ``to_html()`` (an
        SVG graph of the kept heads, MLPs and edges).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> ds = il.datasets.induction(n=4, seq_len=5, lm=lm)
        >>> c = il.discover_circuit(lm, ds, keep=10)
        >>> len(c.edges)
        10
    """
    t0 = time.perf_counter()
    if estimator not in METHODS:
        raise PatchingError(f"estimator must be one of {METHODS}; got {estimator!r}.")
    if ds is not None:
        clean, corrupted, target = ds.clean, ds.corrupted, ds.target
    if clean is None or corrupted is None or target is None:
        raise PatchingError("Give a dataset (il.datasets.ioi(...)) or clean=, corrupted= and target=.")
    if isinstance(keep, bool) or not ((isinstance(keep, int) and keep >= 1) or (isinstance(keep, float) and 0 < keep <= 1)):
        raise PatchingError(f"keep is a share of edges in (0, 1] or a number of edges >= 1; got {keep!r}.")
    pairs = tokenize_pairs(lm, clean, corrupted, target)
    xb, cb, tgt = pairs.corrupted, pairs.clean, pairs.target
    L, H = lm.n_layers, lm.n_heads
    names = ["blocks.0.resid_pre"] + [f"blocks.{l}.attn.heads" for l in range(L)] + [f"blocks.{l}.mlp" for l in range(L)]
    with torch.no_grad():
        with lm.capture(names + ["embed"]) as cc:
            clean_value = float(tgt(lm.forward(cb, grad=False)).float().mean())
        with lm.capture(names + ["embed"]) as xc:
            corrupt_value = float(tgt(lm.forward(xb, grad=False)).float().mean())
    denom, noise = normaliser(clean_value, corrupt_value, dtype=lm.dtype)
    real = xb.attention_mask.bool().unsqueeze(-1).float().to(lm.device)

    # what each upstream node writes differently on clean and corrupted prompts
    ups, downs = _node_names(L, H)
    deltas = {"input": (cc["blocks.0.resid_pre"] - xc["blocks.0.resid_pre"]).float(),
              "heads": [(cc[f"blocks.{l}.attn.heads"] - xc[f"blocks.{l}.attn.heads"]).float() for l in range(L)],
              "mlp": [(cc[f"blocks.{l}.mlp"] - xc[f"blocks.{l}.mlp"]).float() for l in range(L)]}
    alphas = [(k + 0.5) / steps for k in range(steps)] if estimator == "eap_ig" else None
    raw, direct_raw, parallel = _edge_scores(lm, xb, tgt, deltas, real, alphas=alphas,
                                             embeds=(xc["embed"], cc["embed"]), batch_size=batch_size)
    scores = (raw / xb.size / denom).float()  # [ups, downs]
    order_u = torch.tensor([_order(u, L) for u in ups])
    order_d = torch.tensor([_order(d, L) for d in downs])
    valid = order_u[:, None] < order_d[None, :]
    for l in parallel:  # no edge from a layer's heads into its own parallel MLP
        valid[1 + l * (H + 1): 1 + l * (H + 1) + H, downs.index(f"mlp{l}")] = False
    scores = torch.where(valid, scores, torch.zeros(()))
    n_edges = int(valid.sum())
    n_keep = keep if isinstance(keep, int) else max(1, int(round(keep * n_edges)))
    n_keep = min(n_keep, n_edges)
    flat = torch.where(valid, scores.abs(), torch.full((), -1.0)).flatten()
    top = flat.topk(n_keep).indices
    edges = [{"from": ups[int(i) // len(downs)], "to": downs[int(i) % len(downs)],
              "score": float(scores.flatten()[i])} for i in top]
    node_score = scores.sum(1)  # a node's attribution: all its out-edges
    head_scores = torch.stack([node_score[1 + l * (H + 1): 1 + l * (H + 1) + H] for l in range(L)])
    mlp_scores = torch.stack([node_score[1 + l * (H + 1) + H] for l in range(L)])
    # conservation: a node's out-edges add up to its own attribution, delta · d metric / d output
    direct_t = (direct_raw / xb.size / denom).float()
    summed = torch.cat([torch.cat([head_scores[l], mlp_scores[l:l + 1]]) for l in range(L)])
    conservation = float((summed - direct_t).abs().max() / direct_t.abs().max().clamp_min(1e-12))
    kept = {e["from"] for e in edges} | {e["to"] for e in edges}
    nodes = []
    for name in ["input"] + [n for n in ups[1:]] + ["logits"]:
        if name not in kept:
            continue
        if name in ("input", "logits"):
            nodes.append({"name": name, "kind": name, "layer": -1 if name == "input" else L, "head": None,
                          "score": float(node_score[0]) if name == "input" else float(scores[:, -1].sum())})
        elif name.startswith("mlp"):
            l = int(name[3:])
            nodes.append({"name": name, "kind": "mlp", "layer": l, "head": None, "score": float(mlp_scores[l])})
        else:
            l, h = (int(x) for x in name[1:].split("H"))
            nodes.append({"name": name, "kind": "head", "layer": l, "head": h, "score": float(head_scores[l, h])})

    # faithfulness: clean run with every head / MLP outside the circuit at its corrupted value
    def run_subset(kept_nodes: list[dict[str, Any]]) -> float:
        in_heads = {(n["layer"], n["head"]) for n in kept_nodes if n["kind"] == "head"}
        in_mlps = {n["layer"] for n in kept_nodes if n["kind"] == "mlp"}
        edits = {}
        for l in range(L):
            keep_h = torch.tensor([(l, h) in in_heads for h in range(H)]).view(1, 1, H, 1)
            edits[f"blocks.{l}.attn.heads"] = (lambda x, m=keep_h, v=xc[f"blocks.{l}.attn.heads"]:
                                               torch.where(m.to(x.device), x, v.to(x.dtype)))
            if l not in in_mlps:
                edits[f"blocks.{l}.mlp"] = lambda x, v=xc[f"blocks.{l}.mlp"]: v.to(x.dtype)
        with torch.no_grad(), lm.intervene(edits):
            return float(tgt(lm.forward(cb, grad=False)).float().mean())

    circuit_value = run_subset(nodes)
    faith = (circuit_value - corrupt_value) / denom
    # the graph figure first draws a pruned subgraph: measure what that picture claims too
    drawn_faith, level_faith = None, []
    marked = [{**n, "terminal": n["kind"] in ("input", "logits")} for n in nodes]
    for k in Graph.levels_for(len(nodes), DRAWN_NODES):
        if k >= len(nodes):
            break  # the whole circuit: measured above
        shown = set(Graph.prune(marked, k))
        f = (run_subset([n for n in nodes if n["name"] in shown]) - corrupt_value) / denom
        if drawn_faith is None:
            drawn_faith = f
        else:
            level_faith.append(float(f))
    n_steps = len(alphas) if alphas else 1
    diagnostics: dict[str, Any] = {
        "forward_passes": (3 + n_steps + (drawn_faith is not None) + len(level_faith)) * xb.size, "backward_passes": n_steps * xb.size,
        "head_vjps_per_backward": L * H, "conservation_error": conservation,
        "seconds": time.perf_counter() - t0}
    if conservation > 1e-3:
        msg = (f"Edge scores do not add up to the nodes' attributions (relative error {conservation:.2g}); "
               "this model's blocks may not be pre-norm residual blocks, so edge scores are approximate.")
        warnings.warn(msg, CheckWarning)
    if faith < 0.5:
        msg = (f"The circuit recovers only {faith:.0%} of the clean-vs-corrupted difference (faithfulness "
               f"{faith:.3f}); keep more edges (keep=) or check the dataset.")
        warnings.warn(msg, CheckWarning)
    result = Circuit(
        model=lm.name, method="EAP-IG" if estimator == "eap_ig" else "EAP", target=tgt.to_dict(), policy=xb.policy,
        diagnostics=diagnostics, nodes=nodes, edges=edges, head_scores=head_scores, mlp_scores=mlp_scores,
        n_edges=n_edges, keep=float(keep), faithfulness=float(faith), circuit_value=circuit_value,
        clean_value=clean_value, corrupt_value=corrupt_value, n_layers=L, n_heads=H,
        drawn_faithfulness=None if drawn_faith is None else float(drawn_faith), level_faithfulness=level_faith)
    if noise:
        result.warn(noise, NoiseWarning)
    return result
