"""Attribution graphs over per-layer transcoders: a planted path is found, the decomposition is exact."""

from __future__ import annotations

import pytest
import torch

import interpretlm as il
from interpretlm.features import Dictionary, FeatureError
from interpretlm.features.dictionary import read_mlp_input
from interpretlm.testing import tiny_lm


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_a_planted_path_is_found():
    lm = tiny_lm("llama")
    prompt, target = "a b c d", 99
    g = torch.Generator().manual_seed(0)
    tcs = [Dictionary.random(lm.d_model, 32, component=f"blocks.{l}.mlp.input", output=f"blocks.{l}.mlp", k=4, seed=l)
           for l in range(2)]
    for tc in tcs:
        tc.W_dec *= 0.01                                    # background features write almost nothing
    seen = {}
    with tcs[0].intervene(lm, replace=True), read_mlp_input(lm, 0, lambda v: seen.__setitem__("x0", v[0, -1].detach().float())):
        lm.forward(prompt)
    # L0 feature 3 reads the last position's MLP input (strongly) and writes a direction r...
    u = lm.model.get_output_embeddings().weight[target].detach().float()
    read = u * lm.final_norm_module().weight.detach().float()     # what the target's logit reads of the residual
    r = torch.randn(lm.d_model, generator=g)
    r -= (r @ read) / (read @ read) * read                        # r has no direct effect on the target's logit
    r /= r.norm()
    tcs[0].W_enc[:, 3] = 6 * seen["x0"] / seen["x0"].norm() ** 2        # activation 6 there (others ~1)
    tcs[0].W_dec[3] = 0.02 * r                    # 0.12 written: half the residual stream (~0.2 here)
    # ...which L1 feature 5 reads; it writes the target token's unembedding row
    tcs[1].W_enc[:, 5] = 5 * r
    tcs[1].W_dec[5] = 0.1 * u / u.norm()
    # the model runs its MLPs as these transcoders (no error term), so the planted path is what it computes
    with tcs[0].intervene(lm, replace=True), tcs[1].intervene(lm, replace=True):
        graph = il.features.attribution_graph(lm, prompt, target, tcs)
    assert graph.diagnostics["linearity_error"] < 1e-4           # exact decomposition of every target
    names = [n["name"] for n in graph.nodes]
    A = graph.adjacency
    last = len(lm.tokenize(prompt).input_ids[0]) - 1
    feats = [i for i, n in enumerate(graph.nodes) if n["kind"] == "feature"]
    top_into_logit = max(feats, key=lambda i: abs(float(A[-1, i])))
    assert names[top_into_logit] == f"L1F5@{last}"
    l0 = [i for i in feats if graph.nodes[i]["layer"] == 0]
    assert names[max(l0, key=lambda i: abs(float(A[top_into_logit, i])))] == f"L0F3@{last}"
    assert {f"L1F5@{last}", f"L0F3@{last}"} <= set(graph.kept)
    # no error nodes carry anything: every path ends at the tokens
    assert graph.replacement_score == pytest.approx(1.0) and graph.completeness_score == pytest.approx(1.0)
    # faithfulness, measured by zeroing the kept features one at a time in the model: the graph's predicted logit
    # changes (linear, frozen norms and attention) within 5% of the measured ones
    assert len(graph.ablations) == 2 and graph.faithfulness > 0.99
    for name, predicted, measured in graph.ablations:
        assert predicted == pytest.approx(measured, rel=0.05), name
    assert "graph" in graph.figures() and "L1F5@" in graph.to_html()     # drawn by the shared graph renderer
    with pytest.raises(FeatureError, match="transcoder"):
        il.features.attribution_graph(lm, prompt, target, [tcs[1], tcs[0]])
