"""The steering sweep (il.steer) and generation under edits."""

from __future__ import annotations

import pytest
import torch

import interpretlm as il
from interpretlm.features import Dictionary, FeatureError
from interpretlm.testing import tiny_lm


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_steering_a_planted_feature_raises_its_concept_rate():
    lm = tiny_lm("llama")
    comp = f"blocks.{lm.n_layers - 1}.resid_post"
    sae = Dictionary.random(lm.d_model, 64, component=comp, k=4, seed=5)
    token = 123
    v = lm.model.get_output_embeddings().weight[token].detach().float()
    sae.W_dec[7] = v / v.norm()
    word = lm.tokenizer.decode([token])
    r = il.steer(lm, il.Unit(sae, 7), strengths=[0.0, 400.0], prompts=["a b", "c d e"], concept=[word],
                 max_new_tokens=5)
    assert r.check.passed and r.diagnostics["identity_error"] < 1e-5
    assert r.concept_rate[1] == 1.0 and r.concept_rate[0] < 1.0       # the planted token everywhere at 400
    # the unsteered samples are the model's own greedy generations
    with lm.intervene({}):
        assert r.samples[0][0] == il.features.generate(lm, "a b", max_new_tokens=5)
    # strength 400 along the token's unembedding makes the text less likely under the unedited model
    assert r.perplexity[1] > r.perplexity[0]
    with pytest.raises(FeatureError, match="one unit"):
        il.steer(lm, [il.Unit(sae, 1), il.Unit(sae, 2)])
    with pytest.raises(FeatureError, match="head"):
        il.steer(lm, il.Unit("blocks.0.attn.heads", 1))


def test_generation_follows_an_intervention():
    lm = tiny_lm("llama")
    comp = f"blocks.{lm.n_layers - 1}.resid_post"
    v = lm.model.get_output_embeddings().weight[77].detach().float()
    with lm.intervene({comp: lambda x: x + 500 * v / v.norm()}):
        text = il.features.generate(lm, "a b", max_new_tokens=3)
    assert text == lm.tokenizer.decode([77] * 3)
