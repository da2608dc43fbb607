"""Attribution graphs over per-layer transcoders: a planted path is found, the decomposition is exact."""

from __future__ import annotations

import pytest
import torch

import interpretlm as il
from interpretlm.features import Dictionary, FeatureError
from interpretlm.features.dictionary import read_mlp_input
from interpretlm.testing import tiny_lm


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    """One thread; dictionaries saved as plain data (results' options) go to a temporary cache."""
    monkeypatch.setenv("INTERPRETLM_CACHE", str(tmp_path / "cache"))
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
    # the edges, patched in the model with every other feature and error held: the planted edge L0F3 -> L1F5 and
    # L1F5 -> logit move their targets as their weights say (attention and norms barely bend them here)
    checked = {(s, t): (p, m) for s, t, p, m in graph.edges_checked}
    for edge in ((f"L0F3@{last}", f"L1F5@{last}"), (f"L1F5@{last}", names[-1])):
        p, m = checked[edge]
        assert m == pytest.approx(p, rel=0.02), edge
    assert graph.diagnostics["edge_error"] < 0.02
    assert "graph" in graph.figures() and "L1F5@" in graph.to_html()     # drawn by the shared graph renderer
    with pytest.raises(FeatureError, match="transcoder"):
        il.features.attribution_graph(lm, prompt, target, [tcs[1], tcs[0]])


def _transcoders(lm, scale=0.1, layers=None):
    """Random per-layer transcoders whose features write a tenth of a unit (the tiny models' residual is ~0.2)."""
    tcs = [Dictionary.random(lm.d_model, 32, component=f"blocks.{l}.mlp.input", output=f"blocks.{l}.mlp", k=4, seed=l)
           for l in (range(lm.n_layers) if layers is None else layers)]
    for tc in tcs:
        tc.W_dec *= scale
    return tcs


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "bert", "phi3", "gemma3"])
def test_every_family_decomposes_exactly(family, monkeypatch):
    """Layer norms (GPT-2, GPT-NeoX, BERT's post-norms and masked-LM head), RMS norms with post-norms (Gemma 3),
    fused projections (Phi-3), biases and position embeddings: the replacement model is affine, so every target
    equals its row of A plus the constant the all-zero pass measures; and the edge check, run in the replacement
    model itself (attention and norms replayed frozen), measures exactly the edges' weights — so what the check
    reports on the real model is the bend of attention and norms, nothing of the bookkeeping."""
    from interpretlm.features import graph as G
    from interpretlm.features.linearize import Frozen

    lm = tiny_lm(family, seed=0)
    prompt = "Mary and John, John gave to" + (" [MASK]" if family == "bert" else "")
    g = il.features.attribution_graph(lm, prompt, il.Contrast(5, 7), _transcoders(lm))
    assert g.diagnostics["linearity_error"] < 1e-5
    assert 0 < g.replacement_score < 1 and 0 < g.completeness_score < 1     # random transcoders leave errors
    assert g.position == (len(lm.tokenize(prompt).input_ids[0]) - (2 if family == "bert" else 1))
    real = G._patched_change

    def frozen_change(lm, batch, *args):
        fr = Frozen(lm)
        with torch.no_grad(), fr.active(replay=False):
            lm.forward(batch)
        with fr.active(replay=True):
            return real(lm, batch, *args)
    monkeypatch.setattr(G, "_patched_change", frozen_change)
    g = il.features.attribution_graph(lm, prompt, il.Contrast(5, 7), _transcoders(lm), max_edges=5)
    assert len(g.edges_checked) == 5
    for s, t, p, m in g.edges_checked:
        assert m == pytest.approx(p, rel=1e-4, abs=1e-6), (s, t)


def test_the_registered_verb_reads_a_folder_and_reruns(tmp_path):
    lm = tiny_lm("llama", seed=0)
    for tc in _transcoders(lm):
        tc.save(tmp_path / f"layer_{tc.layer}")
    g = il.attribution_graph(lm, "a b c d", il.NextToken(9), transcoders=str(tmp_path), max_edges=4)
    assert g.method == "attribution_graph" and g.check.name == "edge_error" and len(g.edges_checked) == 4
    assert g.check.value == pytest.approx(g.diagnostics["edge_error"])
    with torch.no_grad():
        assert g.logit == pytest.approx(float(lm.forward("a b c d").logits[0, -1, 9]), rel=1e-5)
    again = il.rerun(g, lm)
    assert torch.equal(again.adjacency, g.adjacency) and again.kept == g.kept
    # a block without a transcoder runs its MLP as one error node: still exact
    part = il.attribution_graph(lm, "a b c d", il.NextToken(9), transcoders={1: _transcoders(lm, layers=[1])[0]})
    assert part.diagnostics["linearity_error"] < 1e-5 and part.diagnostics["layers"] == [1]
    assert all(n["layer"] == 1 for n in part.nodes if n["kind"] == "feature")


def test_bad_transcoders_and_targets_are_clear_errors(tmp_path):
    lm = tiny_lm("llama", seed=0)
    tcs = _transcoders(lm)
    wide = Dictionary.random(lm.d_model + 4, 16, component="blocks.0.mlp.input", output="blocks.0.mlp", k=2)
    with pytest.raises(il.features.DictionaryMismatchError, match="numbers per token"):
        il.attribution_graph(lm, "a b", il.NextToken(9), transcoders=[wide, tcs[1]])
    deep = Dictionary.random(lm.d_model, 16, component="blocks.7.mlp.input", output="blocks.7.mlp", k=2)
    with pytest.raises(il.features.DictionaryMismatchError, match="out of range"):
        il.attribution_graph(lm, "a b", il.NextToken(9), transcoders=[tcs[0], deep])
    sae = Dictionary.random(lm.d_model, 16, component="blocks.0.resid_post", k=2)
    with pytest.raises(FeatureError, match="not a transcoder"):
        il.attribution_graph(lm, "a b", il.NextToken(9), transcoders=[sae])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"0")
    with pytest.raises(il.features.DictionaryFormatError, match="holds no transcoder"):
        il.attribution_graph(lm, "a b", il.NextToken(9), transcoders=str(tmp_path / "junk"))
    with pytest.raises(FeatureError, match="logit"):
        il.attribution_graph(lm, "a b", il.Continuation(" c"), transcoders=tcs)
    with pytest.raises(il.OptionError, match="transcoders"):
        il.attribution_graph(lm, "a b", il.NextToken(9))


def test_the_command_line_draws_a_graph_from_a_folder(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from interpretlm import cli

    lm = tiny_lm("llama", seed=0)
    monkeypatch.setattr(il, "load", lambda name="smollm2-135m", **kw: lm)
    for tc in _transcoders(lm):
        tc.save(tmp_path / "tcs" / f"layer_{tc.layer}")
    js, page = tmp_path / "g.json", tmp_path / "g.html"
    res = CliRunner().invoke(cli.app, ["attribution_graph", "a b c d", "--target", " a", "--contrast", " b",
                                       "--transcoders", str(tmp_path / "tcs"), "--json", str(js), "--out", str(page)])
    assert res.exit_code == 0, res.output
    g = il.Result.load(js)
    assert g.target_token.count("'") == 4 and g.diagnostics["linearity_error"] < 1e-5
    html = page.read_text()
    kept = [n for n in g.kept if n.startswith("L")]
    assert kept and all(n in html for n in kept) and "<svg" in html      # the shared graph renderer's drawing
