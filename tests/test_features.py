"""Feature dictionaries: formats, splicing, steering, units, training on planted directions, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import interpretlm as il
from interpretlm.features import (Dictionary, DictionaryFormatError, DictionaryMismatchError, FeatureError,
                                  FeatureIndexError)
from interpretlm.testing import tiny_lm

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    """Training steps are small matrix products: on the shared 2-core machine two threads spin-wait on each
    other (30x slower under load), so these tests run on one and restore the setting. Dictionaries saved as
    plain data (units in results) go to a temporary cache."""
    monkeypatch.setenv("INTERPRETLM_CACHE", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sparsify_folder(root, name, d_in, n, k, transcode=False, seed=0):
    """A dictionary written the way EleutherAI sparsify's ``save_to_disk`` writes one."""
    g = torch.Generator().manual_seed(seed)
    folder = root / name
    folder.mkdir(parents=True)
    save_file({"encoder.weight": torch.randn(n, d_in, generator=g), "encoder.bias": torch.randn(n, generator=g) * 0.1,
               "W_dec": torch.randn(n, d_in, generator=g) / d_in ** 0.5, "b_dec": torch.randn(d_in, generator=g) * 0.1},
              str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"expansion_factor": 4, "normalize_decoder": True, "num_latents": n,
                                                 "k": k, "multi_topk": False, "skip_connection": False,
                                                 "transcode": transcode, "d_in": d_in}))
    return folder


def _saelens_jumprelu(root, d_in, n, hook, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {"W_enc": torch.randn(d_in, n, generator=g), "b_enc": torch.randn(n, generator=g) * 0.1,
         "W_dec": torch.randn(n, d_in, generator=g) / d_in ** 0.5, "b_dec": torch.randn(d_in, generator=g) * 0.1,
         "threshold": torch.rand(n, generator=g)}
    root.mkdir(parents=True, exist_ok=True)
    save_file(t, str(root / "sae_weights.safetensors"))
    (root / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": d_in, "d_sae": n,
                                               "apply_b_dec_to_input": False, "normalize_activations": "none",
                                               "metadata": {"hook_name": hook}}))
    return root, t


def test_saelens_jumprelu_encode_is_the_published_formula(tmp_path):
    folder, t = _saelens_jumprelu(tmp_path / "jr", 64, 96, "blocks.1.hook_resid_post")
    sae = il.features.load(folder)
    assert (sae.activation, sae.component, sae.source) == ("jumprelu", "blocks.1.resid_post", "saelens")
    x = torch.randn(5, 7, 64)
    pre = x @ t["W_enc"] + t["b_enc"]                              # apply_b_dec_to_input=False
    ref = pre.relu() * (pre > t["threshold"])
    assert torch.allclose(sae.encode(x), ref, atol=1e-6)
    assert torch.allclose(sae.decode(ref), ref @ t["W_dec"] + t["b_dec"], atol=1e-6)


def test_sparsify_topk_and_saelens_round_trip(tmp_path):
    folder = _sparsify_folder(tmp_path, "layers.1", 64, 128, 8)
    sae = il.features.load(folder)
    assert (sae.component, sae.activation, sae.k, sae.subtract_b_dec) == ("blocks.1.resid_post", "topk", 8, True)
    from safetensors.torch import load_file
    w = load_file(str(folder / "sae.safetensors"))
    x = torch.randn(10, 64)
    pre = ((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"]).relu()   # sparsify: relu, then top-k
    top = pre.topk(8, dim=-1)
    ref = torch.zeros_like(pre).scatter_(-1, top.indices, top.values)
    assert torch.allclose(sae.encode(x), ref, atol=1e-5)
    again = il.features.load(sae.save(tmp_path / "saved"))       # our SAELens writer, read back
    assert torch.equal(again.encode(x), sae.encode(x)) and again.component == sae.component
    tc = il.features.load(_sparsify_folder(tmp_path, "layers.0.mlp", 64, 96, 4, transcode=True))
    assert (tc.component, tc.output, tc.subtract_b_dec) == ("blocks.0.mlp.input", "blocks.0.mlp", False)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("component", ["blocks.1.resid_post", "blocks.0.mlp", "blocks.1.mlp.neurons",
                                       "blocks.0.attn.heads"])
def test_splicing_leaves_the_logits_unchanged(family, component):
    lm = tiny_lm(family)
    width = il.features.component_width(lm, component)
    sae = Dictionary.random(width, 3 * width, component=component, k=8, seed=1)
    sae.b_dec = torch.randn(width) * 0.3
    ref = lm.forward(PROMPT).logits.float()
    with lm.intervene({component: sae.splice()}):
        spliced = lm.forward(PROMPT).logits.float()
    assert (spliced - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max())
    with sae.intervene(lm, replace=True):                          # the reconstruction alone does change them
        replaced = lm.forward(PROMPT).logits.float()
    assert (replaced - ref).abs().max() > 1e-3


def test_transcoder_splice_and_steer_at_the_mlp_output():
    lm = tiny_lm("llama")
    tc = Dictionary.random(lm.d_model, 96, component="blocks.0.mlp.input", output="blocks.0.mlp", k=6, seed=2)
    ref = lm.forward(PROMPT).logits
    with tc.intervene(lm):
        assert torch.allclose(lm.forward(PROMPT).logits, ref, atol=1e-5)
    # steering feature i by s adds s * W_dec[i] to the MLP's output at every token: the same as adding it by hand
    with tc.intervene(lm, steer={5: 3.0}):
        steered = lm.forward(PROMPT).logits
    with lm.intervene({"blocks.0.mlp": lambda v: v + 3.0 * tc.direction(5)}):
        by_hand = lm.forward(PROMPT).logits
    assert torch.allclose(steered, by_hand, atol=1e-4)


def test_steering_and_ablation_do_what_they_say():
    lm = tiny_lm("llama")
    comp = "blocks.1.resid_post"
    sae = Dictionary.random(lm.d_model, 128, component=comp, k=8, seed=3)
    seen = {}
    with lm.capture([comp]) as cache:
        lm.forward(PROMPT)
    x = cache[comp]
    f = sae.encode(x)
    i = int(f[0, -1].argmax())                  # a feature active at the last token
    with lm.intervene({comp: sae.steer({i: 5.0})}), lm.capture([comp]) as c2:
        lm.forward(PROMPT)
    # the component moved by exactly 5 W_dec[i] (steering adds to the activation, the error stays)
    assert torch.allclose(c2[comp] - x, 5.0 * sae.direction(i).expand_as(x), atol=1e-4)
    with lm.intervene({comp: sae.ablate([i])}), lm.capture([comp]) as c3:
        lm.forward(PROMPT)
    assert torch.allclose(c3[comp] - x, -f[..., i:i + 1] * sae.direction(i), atol=1e-4)
    seen["ok"] = True
    assert seen


def test_bad_input_is_a_clear_error(tmp_path):
    lm = tiny_lm("llama")
    with pytest.raises(DictionaryFormatError, match="not a folder"):
        il.features.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DictionaryFormatError, match="no cfg.json"):
        il.features.load(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "cfg.json").write_text("{}")
    (tmp_path / "odd" / "weights.pt").write_bytes(b"x")
    with pytest.raises(DictionaryFormatError, match="not a format we recognise"):
        il.features.load(tmp_path / "odd")
    wide = Dictionary.random(lm.d_model + 1, 16, component="blocks.1.resid_post", k=2)
    with pytest.raises(DictionaryMismatchError, match="another model or component"):
        il.maximize(lm, il.Unit(wide, 0), corpus=["a b c d e f"] * 4, k=1, window=4)
    far = Dictionary.random(lm.d_model, 16, component="blocks.9.resid_post", k=2)
    with pytest.raises(DictionaryMismatchError, match="does not have"):
        far.check_model(lm)
    ok = Dictionary.random(lm.d_model, 16, component="blocks.1.resid_post", k=2)
    with pytest.raises(FeatureIndexError, match="out of range"):
        ok.steer({16: 1.0})
    with pytest.raises(FeatureIndexError):
        il.Unit(ok, 99).bind(lm)
    with pytest.raises(FeatureError):
        ok.steer([1, 2])
    assert issubclass(DictionaryMismatchError, il.InterpretLMError)


def test_features_are_units_for_mining_and_rerun(tmp_path):
    lm = tiny_lm("llama")
    comp = "blocks.1.resid_post"
    sae = Dictionary.random(lm.d_model, 64, component=comp, k=4, seed=4)
    sae.save(tmp_path / "sae")
    texts = ["the cat sat on the mat and the dog ran off to the park"] * 6
    units = [il.Unit(sae, 3), il.Unit(sae, 10), il.Unit("blocks.1.mlp.neurons", 2)]
    r = il.maximize(lm, units, corpus=texts, k=2, window=8, detail=2)
    assert r.check.passed and r.unit_names[0] == f"{comp}:{sae.name}[3]"
    # the streamed maxima are the features' activations over the same windows, computed by hand
    windows = list(il.corpus(texts).windows(lm.tokenizer, 8))
    with lm.capture([comp]) as cache:
        lm.run(windows, head=False)
    f = sae.encode(cache[comp])                                     # [n_windows, 8, n_features]
    for col, i in ((0, 3), (1, 10)):
        best = f[..., i].amax(1).sort(descending=True).values[:2]
        assert torch.allclose(r.top_values[col], best, atol=1e-5)
    # the unit (its dictionary by folder) is plain data: the result reruns
    again = il.rerun(r, lm)
    assert torch.allclose(again.top_values, r.top_values)
    assert il.Unit.from_dict(il.Unit(sae, 3).to_dict()) == il.Unit(sae, 3)


def test_training_recovers_planted_sparse_directions():
    g = torch.Generator().manual_seed(0)
    d, m, n = 32, 64, 8000
    planted = torch.randn(m, d, generator=g)
    planted /= planted.norm(dim=1, keepdim=True)
    codes = torch.zeros(n, m)
    active = torch.rand(n, m, generator=g) < 2.5 / m              # ~2.5 directions a token
    codes[active] = 1 + torch.rand(int(active.sum()), generator=g)
    x = codes @ planted + 0.01 * torch.randn(n, d, generator=g)
    sae = il.features.fit(x, n_features=96, k=4, steps=200, batch_tokens=512, lr=3e-3, dead_after=4000)
    best = (planted @ sae.W_dec.T).max(1).values                   # each planted direction's closest feature
    assert best.min() >= 0.9, best.sort().values[:5]
    assert sae.metrics["l0"] <= 4 and sae.metrics["fvu"] < 0.2


def test_steering_a_planted_feature_moves_the_output_as_constructed():
    lm = tiny_lm("llama")
    comp = f"blocks.{lm.n_layers - 1}.resid_post"
    sae = Dictionary.random(lm.d_model, 64, component=comp, k=4, seed=5)
    token = 123
    v = lm.model.get_output_embeddings().weight[token].detach().float()
    sae.W_dec[7] = v / v.norm()                                    # feature 7 writes the token's unembedding row
    with lm.capture([comp]) as cache:
        ref = lm.forward(PROMPT).logits.float()
    last = []
    for s in (0.0, 5.0, 20.0):
        with lm.intervene({comp: sae.steer({7: s})}):
            logits = lm.forward(PROMPT).logits.float()
        # the exact reference: the final norm and unembedding applied to the residual moved by s * v/|v|
        by_hand = lm.logits_at(cache[comp] + s * sae.direction(7)).float()
        assert torch.allclose(logits, by_hand, atol=1e-4)
        last.append(float(logits[0, -1, token] - ref[0, -1, token]))
    assert abs(last[0]) < 1e-5 and 0 < last[1] < last[2]
    with lm.intervene({comp: sae.steer({7: 200.0})}):
        assert int(lm.forward(PROMPT).logits[0, -1].argmax()) == token


def test_train_on_a_model_resumes_to_the_same_dictionary(tmp_path):
    lm = tiny_lm("llama")
    texts = [f"the cat number {i} sat on the mat and the dog ran off to the park" for i in range(60)]
    opts = dict(corpus=texts, n_features=64, k=4, tokens=1500, window=16, batch_size=4, eval_windows=4,
                checkpoint_every=8, progress=False)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = il.features.train(lm, "blocks.1.resid_post", path=tmp_path / "a", **opts)

        def stop(done, total, desc):
            if done >= 40:
                raise KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            il.features.train(lm, "blocks.1.resid_post", path=tmp_path / "b", **dict(opts, progress=stop))
        assert (tmp_path / "b" / "checkpoint" / "state.safetensors").exists()
        resumed = il.features.train(lm, "blocks.1.resid_post", path=tmp_path / "b", **opts)
    assert torch.allclose(resumed.W_dec, full.W_dec, atol=1e-6) and resumed.metrics["steps"] == full.metrics["steps"]
    m = full.metrics
    assert m["l0"] <= 4 and 0 <= m["dead_fraction"] <= 1
    # CE recovered is what its definition says, from the three losses
    assert m["ce_loss_recovered"] == pytest.approx((m["ce_zero_ablated"] - m["ce_spliced"])
                                                   / (m["ce_zero_ablated"] - m["ce_clean"]), rel=1e-6)
    again = il.features.load(tmp_path / "a")                       # saved in SAELens format with its metrics
    assert torch.equal(again.W_dec, full.W_dec) and again.metrics["fvu"] == pytest.approx(m["fvu"])
    tc = il.features.train(lm, "blocks.0.mlp", kind="transcoder", **dict(opts, tokens=600))
    assert tc.is_transcoder and tc.metrics["fvu"] < 1.0
    with pytest.raises(FeatureError, match="transcoder"):
        il.features.train(lm, "blocks.0.resid_post", kind="transcoder", **opts)


def test_patching_a_feature_from_another_run():
    lm = tiny_lm("llama")
    comp = "blocks.0.resid_post"
    sae = Dictionary.random(lm.d_model, 64, component=comp, k=6, seed=7)
    clean, corrupt = "Mary and John, John gave to", "Mary and John, Mary gave to"
    with lm.capture([comp]) as c:
        lm.forward(clean)
    x_clean = c[comp]
    with lm.capture([comp]) as c:
        lm.forward(corrupt)
    f_clean, f_corr = sae.encode(x_clean), sae.encode(c[comp])
    i = int((f_corr - f_clean).abs().sum((0, 1)).argmax())        # the feature that differs most
    with lm.intervene({comp: sae.patch([i], f_corr)}), lm.capture([comp]) as c2:
        lm.forward(clean)
    moved = c2[comp] - x_clean
    assert torch.allclose(moved, (f_corr - f_clean)[..., i:i + 1] * sae.direction(i), atol=1e-5)
    with pytest.raises(FeatureError, match="positions"):
        with lm.intervene({comp: sae.patch([i], f_corr[:, :3])}):
            lm.forward(clean)


def test_saelens_topk_with_decoder_norm_rescaling_folds_exactly(tmp_path):
    g = torch.Generator().manual_seed(3)
    t = {"W_enc": torch.randn(16, 40, generator=g), "b_enc": torch.randn(40, generator=g),
         "W_dec": torch.randn(40, 16, generator=g), "b_dec": torch.randn(16, generator=g)}
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": 16, "d_sae": 40, "k": 5,
                                                   "apply_b_dec_to_input": True, "normalize_activations": "none",
                                                   "rescale_acts_by_decoder_norm": True,
                                                   "metadata": {"hook_name": "blocks.0.hook_resid_post"}}))
    sae = il.features.load(tmp_path)
    x = torch.randn(9, 16, generator=g)
    norms = t["W_dec"].norm(dim=1)
    pre = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * norms      # SAELens: pre-activations times decoder norms
    top = pre.topk(5, dim=-1)
    f = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
    assert torch.allclose(sae.encode(x), f, atol=1e-5)
    assert torch.allclose(sae.decode(f), (f / norms) @ t["W_dec"] + t["b_dec"], atol=1e-5)
