"""Circuit analysis on the real default model (SmolLM2-135M: Llama, 9 query / 3 key-value heads)."""

import pytest
import torch

import interpretlm as il

pytestmark = pytest.mark.slow  # every test here uses the real default model

CLEAN = "When Mary and John went to the store, John gave a drink to"
ABC = "When Anna and Tom went to the store, Paul gave a drink to"


def test_ioi_heads_on_the_default_model(default_lm):
    t = il.Contrast(" Mary", " John")
    fast = il.patch(default_lm, CLEAN, ABC, t, over="heads", layers=[23])
    loop = il.patch(default_lm, CLEAN, ABC, t, over="heads", layers=[23], engine="loop")
    assert fast.diagnostics["engine"] == "replay"
    assert torch.allclose(fast.effect, loop.effect, atol=1e-5)
    assert fast.diagnostics["sanity_all_positions_layer_23"] == pytest.approx(1.0, abs=1e-4)
    assert fast.effect[0, 3] > 0.3  # L23H3, the strongest head of the full sweep (README)


def test_ioi_dataset_and_logit_lens_on_the_default_model(default_lm):
    ds = il.datasets.ioi(n=4, seed=0, lm=default_lm)
    lengths = {len(default_lm.tokenize(p).tokens[0]) for p in ds.clean + ds.corrupted}
    assert len(lengths) == 1  # one template: positions line up
    clean = default_lm.score(ds.clean, ds.target)
    corrupt = default_lm.score(ds.corrupted, ds.target)
    assert (clean > corrupt).all() and (clean > 0).all()  # the model does IOI
    lens = il.logit_lens(default_lm, CLEAN, " Mary")
    assert lens.top_tokens[-1][0] == " Mary"
    assert lens.diagnostics["final_layer_error"] < 1e-5
    assert int(lens.target_rank[0]) > 0  # the embeddings alone do not predict it
