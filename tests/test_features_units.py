"""Every feature of a dictionary as units: one sparse mining pass equals a brute-force reference; transcoder
features are units read at the MLP's input."""

from __future__ import annotations

import pytest
import torch

import interpretlm as il
from interpretlm.features import Dictionary, FeatureIndexError
from interpretlm.maximization.mining_state import MiningState
from interpretlm.maximization.sparse import update_sparse
from interpretlm.testing import tiny_lm

@pytest.fixture(autouse=True)
def temporary_cache(tmp_path, monkeypatch):
    """Dictionaries saved as plain data (units in results) go to a temporary cache."""
    monkeypatch.setenv("INTERPRETLM_CACHE", str(tmp_path / "cache"))


TEXTS = ["the cat sat on the mat and the dog ran off to the park", "a cat and a dog met in the park at noon",
         "the bird sang while the cat slept on the warm mat"] * 3


def planted_sae(lm):
    """A TopK SAE on the token embeddings: feature 7 fires on ' cat' only (activation 50), feature 9 never."""
    sae = Dictionary.random(lm.d_model, 48, component="embed", k=4, seed=3)
    cat = lm.tokenizer(" cat", add_special_tokens=False)["input_ids"]
    assert len(cat) == 1
    e = lm.model.get_input_embeddings().weight[cat[0]].detach().float()
    sae.W_enc[:, 7] = 100 * e / (e @ e)
    sae.b_enc[7] = -50.0                      # 50 at ' cat'; other tokens' embeddings barely project on it
    sae.b_enc[9] = -1e4
    sae.subtract_b_dec = False
    return sae, cat[0]


def brute_force(lm, dictionary, window, component):
    windows = list(il.corpus(TEXTS).windows(lm.tokenizer, window))
    with lm.capture([component]) as cache, torch.no_grad():
        lm.run(windows, head=False)
    return windows, dictionary.encode(cache[component].float())          # [n_windows, W, n_features]


def test_every_feature_in_one_sparse_pass_equals_brute_force():
    lm = tiny_lm("llama", seed=0)
    sae, cat = planted_sae(lm)
    r = il.maximize(lm, il.Unit.all(sae), corpus=TEXTS, k=3, window=8, batch_size=4, detail=2)
    windows, f = brute_force(lm, sae, 8, "embed")
    assert len(r.unit_names) == sae.n_features and r.n_windows == len(windows)
    wmax = f.amax(1).T                                                   # [n_features, n_windows]
    best, order = wmax.sort(dim=1, descending=True, stable=True)         # ties: the earlier window
    assert torch.allclose(r.top_values, best[:, :3], rtol=1e-5, atol=1e-6)
    assert torch.equal(r.top_windows, order[:, :3])
    ids = torch.tensor(windows)
    assert float(r.frequency[7]) == pytest.approx(float((ids == cat).float().mean()))    # fires exactly at ' cat'
    assert float(r.top_values[7, 0]) == pytest.approx(50.0, rel=1e-4)
    assert r.unit_names[9] in r.dead and float(r.frequency[9]) == 0.0
    flat = f.reshape(-1, sae.n_features)
    assert torch.allclose(r.frequency, (flat > 0).float().mean(0), atol=1e-7)
    assert torch.allclose(r.mean, flat.mean(0), rtol=1e-4, atol=1e-6)
    # the result reruns (the dictionary by its folder)
    again = il.rerun(r, lm)
    assert torch.equal(again.top_windows, r.top_windows)


def test_the_sparse_fold_leaves_the_dense_folds_state():
    g = torch.Generator().manual_seed(0)
    b, W, n = 5, 12, 40
    dense = torch.zeros(b, W, n)
    mask = torch.rand(b, W, n, generator=g) < 0.08
    dense[mask] = torch.rand(int(mask.sum()), generator=g) * 3
    dense[1, 3, 4] = dense[1, 7, 4] = 9.0                                  # a tie: the first position counts
    states = [MiningState(n, 0, 3, 2, 2, 16, hist_every=3) for _ in range(2)]
    for step in range(2):                                                  # the second batch meets a set range
        v = dense if step == 0 else dense.flip(0)
        gens = [torch.Generator().manual_seed(7 + step) for _ in range(2)]
        states[0].update(slice(0, n), v, step * b, 0.0, gens[0])
        win, pos, unit = v.nonzero(as_tuple=True)
        update_sparse(states[1], slice(0, n), (b, W, n), win, pos, unit, v[win, pos, unit], step * b, 0.0, gens[1])
    for key, a in states[0].t.items():
        s = states[1].t[key]
        if key in ("s1", "s2"):
            assert torch.allclose(a, s, rtol=1e-6), key
        else:
            assert torch.equal(a, s), key


def test_transcoder_features_are_units_at_the_mlps_input():
    lm = tiny_lm("llama", seed=0)
    tc = Dictionary.random(lm.d_model, 32, component="blocks.1.mlp.input", output="blocks.1.mlp", k=4, seed=1)
    r = il.maximize(lm, il.Unit.all(tc), corpus=TEXTS, k=2, window=8, detail=1)
    _, f = brute_force(lm, tc, 8, "blocks.1.mlp.input")
    assert torch.allclose(r.top_values, f.amax(1).T.sort(dim=1, descending=True).values[:, :2], rtol=1e-5, atol=1e-6)
    # steering a transcoder feature by s writes s · W_dec[i] more at the MLP's output
    edit = il.features.steering_edit(lm, il.Unit(tc, 5), 3.0)
    with lm.capture(["blocks.1.mlp"]) as clean:
        lm.forward("a b c")
    with lm.intervene(edit), lm.capture(["blocks.1.mlp"]) as steered:
        lm.forward("a b c")
    assert torch.allclose(steered["blocks.1.mlp"] - clean["blocks.1.mlp"], 3.0 * tc.direction(5).expand(1, 3, -1),
                          atol=1e-5)


def test_bad_dictionaries_as_units_are_clear_errors():
    lm = tiny_lm("llama", seed=0)
    wide = Dictionary.random(lm.d_model + 2, 16, component="blocks.0.resid_post", k=2)
    with pytest.raises(il.features.DictionaryMismatchError, match="numbers per token"):
        il.maximize(lm, il.Unit.all(wide), corpus=TEXTS, k=2, window=8)
    deep = Dictionary.random(lm.d_model, 16, component="blocks.9.mlp.input", output="blocks.9.mlp", k=2)
    with pytest.raises(il.features.DictionaryMismatchError, match="out of range"):
        il.maximize(lm, il.Unit.all(deep), corpus=TEXTS, k=2, window=8)
    ok = Dictionary.random(lm.d_model, 16, component="blocks.0.resid_post", k=2)
    with pytest.raises(FeatureIndexError, match="out of range"):
        il.maximize(lm, il.Unit(ok, 16), corpus=TEXTS, k=2, window=8)
    u = il.Unit.all(ok)
    assert il.units.Units.from_dict(u.to_dict()) == u and u.name == f"all blocks.0.resid_post:{ok.name}"


def test_a_feature_is_explained_and_scored_like_a_neuron():
    """explain_unit takes a dictionary feature: its evidence is the feature's own top windows (the planted
    feature peaks at ' cat' with 50) and the bundled encoder prefers the true rule to a wrong one."""
    import warnings

    from interpretlm.testing import CORPUS

    lm = tiny_lm("llama", seed=0)
    sae, cat = planted_sae(lm)
    kw = dict(corpus=TEXTS + list(CORPUS), k=6, window=8, n_explain=3, n_windows=8, scorers=("embedding",),
              progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        true = il.explain_unit(lm, il.Unit(sae, 7), explanation="the word cat (an animal)", **kw)
        wrong = il.explain_unit(lm, il.Unit(sae, 7), explanation="numbers and dates", **kw)
    top = [e for e in true.explained[0]["evidence"] if e["kind"] == "top"]
    assert top and all(max(e["values"]) == pytest.approx(50.0, rel=1e-4) for e in top)
    assert all(e["tokens"][e["values"].index(max(e["values"]))] == " cat" for e in top)
    assert true.scores["embedding"] >= 0.9 and true.scores["embedding"] > wrong.scores["embedding"]
