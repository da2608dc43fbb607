"""Attribution graphs when the residual stream holds exact zeros (quantised embeddings often do)."""

from __future__ import annotations

import math

import pytest
import torch

import interpretlm as il
from interpretlm.features import Dictionary
from interpretlm.testing import tiny_lm


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_zeros_in_a_normalised_input_keep_the_graph_exact():
    # the default model's GGUF embeddings hold exact zeros (17 of 576 in <|im_start|>'s row): a frozen RMS
    # norm read as out / x would be 0 / 0 there and turn the logit and every edge into NaN
    lm = tiny_lm("llama")
    prompt, target = "a b c", 7
    ids = lm.tokenize(prompt).input_ids[0]
    emb = lm.model.get_input_embeddings().weight
    with torch.no_grad():
        emb[ids, :5] = 0.0
        clean = float(lm.forward(prompt).logits[0, -1, target])
    tcs = [Dictionary.random(lm.d_model, 32, component=f"blocks.{l}.mlp.input", output=f"blocks.{l}.mlp", k=4,
                             seed=l) for l in range(lm.n_layers)]
    g = il.features.attribution_graph(lm, prompt, target, tcs, max_ablations=0)
    assert math.isfinite(g.logit) and not torch.isnan(g.adjacency).any()
    # the replacement model (transcoders + error terms, frozen norms and attention) computes the model's own logit
    assert g.logit == pytest.approx(clean, rel=1e-4, abs=1e-5)
    assert g.diagnostics["linearity_error"] < 1e-4
    # the logit's row sums to the logit: the tokens' embeddings, the errors and the features are its only sources
    assert float(g.adjacency[-1].sum()) == pytest.approx(clean, rel=1e-3, abs=1e-4)
