"""The steering sweep (il.steer) and generation under edits."""

from __future__ import annotations

import pytest
import torch

import interpretlm as il
from interpretlm.features import Dictionary, FeatureError
from interpretlm.testing import tiny_lm


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    """One thread (see test_features.py); dictionaries saved as plain data go to a temporary cache."""
    monkeypatch.setenv("INTERPRETLM_CACHE", str(tmp_path / "cache"))
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
    assert r.dictionary["features"] == 64 and "dictionary" in r.figures() and "Check" in r.to_html()
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


def test_features_beside_difference_in_means_and_probes():
    lm = tiny_lm("llama")
    comp = "embed"     # a token's own vector, so a planted detector reads exactly the concept's token
    pos = [f"the {w} saw a cat near the house" for w in ("old", "young", "tall", "small", "red", "blue", "green", "big")]
    neg = [t.replace("cat", "dog") for t in pos]
    sae = Dictionary.random(lm.d_model, 64, component=comp, k=4, seed=0)
    cat = lm.tokenizer(" cat", add_special_tokens=False)["input_ids"][-1]
    v = lm.model.get_input_embeddings().weight[cat].detach().float()
    sae.W_enc[:, 5] = v / v.norm()            # feature 5 reads the " cat" embedding...
    sae.b_enc[5] = 100.0                      # ...and is always among the top k, so its value is that projection
    r = il.features.compare_to_baselines(lm, sae, pos, neg, strengths=[0.0, 30.0], prompts=["a b"],
                                         max_new_tokens=3)
    assert r.best_feature == 5 and r.detection["sae_feature"] == 1.0
    assert r.detection["diff_in_means"] >= 0.9 and r.detection["linear_probe"] >= 0.9
    assert r.concept[0].strip() == "cat" and set(r.steering) == {"sae_feature", "diff_in_means", "linear_probe"}
    for curve in r.steering.values():   # strength 0 is the same unedited generation for every method
        assert curve["concept_rate"][0] == r.steering["sae_feature"]["concept_rate"][0]


def test_the_command_line_steers_a_feature_of_a_saved_dictionary(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from interpretlm import cli

    lm = tiny_lm("llama")
    monkeypatch.setattr(il, "load", lambda name="smollm2-135m", **kw: lm)
    sae = Dictionary.random(lm.d_model, 32, component="blocks.1.resid_post", k=4, seed=1)
    folder = sae.save(tmp_path / "sae")
    js = tmp_path / "s.json"
    res = CliRunner().invoke(cli.app, ["steer", str(folder), "3", "--max-new-tokens", "3", "--strengths", "[0, 8]",
                                       "--json", str(js)])
    assert res.exit_code == 0, res.output
    r = il.Result.load(js)
    assert r.unit == f"blocks.1.resid_post:{sae.name}[3]" and r.check.passed and len(r.concept_rate) == 2
    assert il.rerun(r, lm).samples == r.samples          # the unit (its dictionary's folder) reruns


def test_a_steering_sweep_carries_the_difference_in_means_baseline():
    lm = tiny_lm("llama")
    comp = f"blocks.{lm.n_layers - 1}.resid_post"
    pos = [f"the {w} cat sat near the cat" for w in ("old", "young", "tall", "small")]
    neg = [t.replace("cat", "dog") for t in pos]

    def mean(texts):
        rows = []
        for t in texts:
            with lm.capture([comp]) as c:
                lm.forward(t)
            rows.append(c[comp][0, 1:].float().mean(0))
        return torch.stack(rows).mean(0)
    diff = mean(pos) - mean(neg)
    sae = Dictionary.random(lm.d_model, 32, component=comp, k=4, seed=2)
    sae.W_dec[3] = 2.0 * diff / diff.norm()            # the feature writes the concept's direction, norm 2 per unit
    r = il.steer(lm, il.Unit(sae, 3), strengths=[0.0, 40.0, 400.0], prompts=["a b"], max_new_tokens=4,
                 positive=pos, negative=neg)
    # the concept comes from the set; the baseline is the same direction with the feature's norm: the same curves
    assert r.concept == il.features.concept_words(lm, pos, neg)
    assert r.diagnostics["baseline_cosine"] == pytest.approx(1.0, abs=1e-5)
    b = r.baselines["diff_in_means"]
    assert b["concept_rate"] == r.concept_rate and b["perplexity"] == pytest.approx(r.perplexity, rel=1e-4)
    assert "diff_in_means (baseline)" in r.figures()["sweep"].series
    # a basis direction of the component: the baseline has its norm (1), and strength 0 is the unedited model
    other = il.steer(lm, il.Unit(comp, 5), strengths=[0.0, 400.0], prompts=["a b"], max_new_tokens=4,
                     positive=pos, negative=neg)
    base = other.baselines["diff_in_means"]
    assert base["concept_rate"][0] == other.concept_rate[0] and base["perplexity"][0] == other.perplexity[0]
    assert other.diagnostics["baseline_cosine"] == pytest.approx(float(diff[5] / diff.norm()), abs=1e-5)
    assert il.rerun(other, lm).baselines == other.baselines
    with pytest.raises(FeatureError, match="both"):
        il.steer(lm, il.Unit(comp, 5), positive=pos)
    with pytest.raises(FeatureError, match="at least 2"):
        il.steer(lm, il.Unit(comp, 5), positive=pos[:1], negative=neg)
