"""Feature attribution and SHAP: exact references, planted games, conservation, reproducibility."""

import warnings

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm.attribution import rank_correlation
from interpretlm.attribution.features import FeatureError
from interpretlm.attribution.integrated_gradients import (CompletenessWarning, fixed_path, integrate_path,
                                                          quadrature)
from interpretlm.attribution.registry import UnknownMethodError
from interpretlm.attribution.shapley import (ShapleyError, exact_shapley, feature_hierarchy, kernel_shapley,
                                             owen_values)

IOI = "When Mary and John went to the store, John gave a drink to"


# ---------------------------------------------------------------------------- linear models (closed forms)
def test_ig_on_linear_model_equals_input_x_gradient():
    rng = np.random.default_rng(0)
    w, x = rng.normal(size=6), rng.normal(size=6)  # f(z) = w . z, zero baseline

    def point_fn(alphas):
        return (alphas * (w @ x))[:, None], np.broadcast_to(w * x, (len(alphas), 1, 6)).copy()

    r = integrate_path(point_fn, n_steps=5)
    np.testing.assert_allclose(r.scores[0], w * x, atol=1e-12)  # input x gradient
    fixed = fixed_path(lambda a: point_fn(a)[1], lambda a: point_fn(a)[0], "gausslegendre", 50)
    np.testing.assert_allclose(fixed.scores[0], w * x, atol=1e-12)


def test_ig_quadratic_closed_form_and_quadratures():
    rng = np.random.default_rng(1)
    c, x, b = rng.normal(size=4), rng.normal(size=4), rng.normal(size=4)
    d = x - b

    def point_fn(alphas):  # f(z) = sum c z^2 on z = b + a d
        z = b[None] + alphas[:, None] * d[None]
        return (z ** 2 @ c)[:, None] - (b ** 2 @ c), (2 * c * z * d)[:, None, :]

    r = integrate_path(point_fn, n_steps=3)
    np.testing.assert_allclose(r.scores[0], c * (x ** 2 - b ** 2), atol=1e-10)
    for m in ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right"):
        a, wts = quadrature(m, 7)
        assert abs(wts.sum() - 1) < 1e-12 and a.min() >= 0 and a.max() <= 1


def test_adaptive_ig_finds_a_sharp_jump():
    # f jumps by 5 within 1/2000 of the path (a steep sigmoid): uniform rules miss it
    k, mid = 8000.0, 0.3137

    def f(a):
        return 5 / (1 + np.exp(np.clip(-k * (a - mid), -500, 500)))

    def point_fn(alphas):
        s = f(alphas)
        slope = k * s * (1 - s / 5)
        return s[:, None], np.stack([0.4 * slope, 0.6 * slope], -1)[:, None, :]

    uniform = fixed_path(lambda a: point_fn(a)[1], lambda a: point_fn(a)[0], "gausslegendre", 50)
    assert uniform.completeness_error > 0.05
    r = integrate_path(point_fn, n_steps=17, max_evals=2000)
    assert r.converged and r.completeness_error <= 0.01
    np.testing.assert_allclose(r.scores[0], [0.4 * (f(1) - f(0)), 0.6 * (f(1) - f(0))], rtol=0.01)


def _linear_game(w):
    return lambda keep: (keep.astype(float) @ w)[:, None] + 0.5


def test_shapley_values_on_linear_and_interaction_games():
    w = np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.5])
    phi, _ = exact_shapley(_linear_game(w), 6)
    np.testing.assert_allclose(phi[0], w, atol=1e-12)
    kphi, v0, v1, _ = kernel_shapley(_linear_game(w), 6, 20, seed=0)
    np.testing.assert_allclose(kphi[0], w, atol=1e-9)
    ophi, *_ = owen_values(_linear_game(w), 6, [[0, 1], [[2, 3], [4, 5]]])
    np.testing.assert_allclose(ophi[0], w, atol=1e-12)

    # v(S) = 1 if features 0 and 1 are both present (a pure interaction) plus 2 * [2 in S]
    def game(keep):
        return ((keep[:, 0] & keep[:, 1]).astype(float) + 2 * keep[:, 2])[:, None]
    phi, _ = exact_shapley(game, 4)
    np.testing.assert_allclose(phi[0], [0.5, 0.5, 2.0, 0.0], atol=1e-12)
    # with every coalition enumerated KernelSHAP is exact
    kphi, *_ = kernel_shapley(game, 4, 16, seed=0)
    np.testing.assert_allclose(kphi[0], phi[0], atol=1e-9)
    # with too few coalitions to separate the features it says so
    from interpretlm.attribution.shapley import ShapleyWarning
    with pytest.warns(ShapleyWarning, match="Raise n_samples"):
        kernel_shapley(_linear_game(w), 6, 4, seed=0)


def test_owen_values_follow_the_hierarchy():
    # players 0 and 1 form a group; v = 1 when 0 and 2 are both present
    def game(keep):
        return (keep[:, 0] & keep[:, 2]).astype(float)[:, None]
    phi, *_ = owen_values(game, 3, [[0, 1], 2])
    # groups {0,1} and {2} split 1 equally; inside the group, 0 takes all of {0,1}'s half
    np.testing.assert_allclose(phi[0], [0.5, 0.0, 0.5], atol=1e-12)
    assert feature_hierarchy(["When", " Mary", ",", " John"]) == [[[0, 1], 2], 3]


# ---------------------------------------------------------------------------- tiny model
def test_methods_record_passes_and_efficiency(llama):
    for method in ("saliency", "input_x_gradient", "occlusion", "lime", "kernel_shap", "exact_shap", "partition_shap"):
        a = il.attribute(llama, "When Mary and John went", il.NextToken(" to"), method=method)
        assert a.scores.shape == (len(a.features),) and np.isfinite(a.scores).all()
        assert a.diagnostics["forward_passes"] >= 1 and a.diagnostics["model_evaluations"] >= 1
        if method in ("kernel_shap", "exact_shap", "partition_shap"):
            assert abs(a.scores.sum() - (a.target_value - a.baseline_value)) < 1e-5
            assert a.completeness_error < 1e-9


def _next_token_logprob(lm, token_id, *, input_ids=None, inputs_embeds=None, attention_mask=None):
    """The reference target, computed on the Hugging Face model itself: log p(token) at the last position."""
    logits = lm.model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits
    return torch.log_softmax(logits[:, -1].float(), -1)[:, token_id]


def _partition(feature_tokens, n):
    """The features' positions, checked to cover every position of the prompt exactly once."""
    assert sorted(p for pos in feature_tokens for p in pos) == list(range(n))
    return feature_tokens


def test_saliency_and_input_x_gradient_equal_autograd_on_the_embeddings(llama):
    prompt = "When Zanzibar and John went to the cabinets"  # 'Zanzibar' is 6 tokens: a word feature of 6 rows
    mary = llama.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]
    ids = torch.tensor([llama.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    x = llama.model.get_input_embeddings()(ids).detach().requires_grad_(True)  # [1, pos, d_model]
    value = _next_token_logprob(llama, mary, inputs_embeds=x)
    (g,) = torch.autograd.grad(value.sum(), x)
    g, x = g[0].double(), x[0].detach().double()  # [pos, d_model]
    for granularity in ("token", "word"):
        kw = dict(granularity=granularity)
        sal = il.attribute(llama, prompt, il.NextToken(" Mary"), method="saliency", **kw)
        dot = il.attribute(llama, prompt, il.NextToken(" Mary"), method="saliency", reduce="dot", **kw)
        ixg = il.attribute(llama, prompt, il.NextToken(" Mary"), method="input_x_gradient", **kw)
        assert sal.input_ids == ids[0].tolist() and sal.target_value == pytest.approx(float(value.detach()), abs=1e-5)
        groups = _partition(sal.feature_tokens, ids.shape[1])
        assert (granularity == "word") == any(len(pos) == 6 for pos in groups)
        # saliency: the L2 norm of the gradient over the feature's [pos, d_model] block
        norm = np.array([float(g[pos].norm()) for pos in groups])
        # input x gradient: embedding . gradient, summed over the feature's positions
        ref_ixg = np.array([float((g[pos] * x[pos]).sum()) for pos in groups])
        scale = np.abs(ref_ixg).max()
        np.testing.assert_allclose(sal.scores, norm, rtol=1e-4, atol=1e-6 * norm.max())
        np.testing.assert_allclose(ixg.scores, ref_ixg, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(dot.scores, ref_ixg, rtol=1e-4, atol=1e-5 * scale)
        assert norm.min() > 0 and scale > 0


def test_occlusion_equals_plain_forward_passes_without_each_window(llama):
    prompt = "When Mary and John went to the store, John gave"
    mary = llama.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]
    ids = torch.tensor([llama.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    n = ids.shape[1]
    unk = llama.tokenizer.convert_tokens_to_ids("<|endoftext|>")  # the tokenizer's unk token: the default baseline

    def f(input_ids, attention_mask=None):
        with torch.no_grad():
            return float(_next_token_logprob(llama, mary, input_ids=input_ids, attention_mask=attention_mask)[0])

    full = f(ids)
    # window 1, token masking: f(x) - f(x with token i replaced by the baseline token)
    a = il.attribute(llama, prompt, il.NextToken(" Mary"), method="occlusion")
    assert a.masking == "token:<|endoftext|>" and _partition(a.feature_tokens, n) == [[i] for i in range(n)]
    ref = []
    for i in range(n):
        occluded = ids.clone()
        occluded[0, i] = unk
        ref.append(full - f(occluded))
    np.testing.assert_allclose(a.scores, ref, rtol=1e-4, atol=1e-5)
    assert a.target_value == pytest.approx(full, abs=1e-5) and np.abs(ref).max() > 1e-2
    # window 1, attention masking: the token dropped from the attention mask, the target still read after
    # the last token (dropping the last token itself moves the prediction to the token before it)
    m = il.attribute(llama, prompt, il.NextToken(" Mary"), method="occlusion", masking="attention")
    ref_m = []
    for i in range(n):
        mask = torch.ones_like(ids)
        mask[0, i] = 0
        ref_m.append(full - f(ids, mask) if i < n - 1 else full - f(ids[:, :-1]))
    np.testing.assert_allclose(m.scores, ref_m, rtol=1e-4, atol=1e-5)
    # window 3, stride 2: each feature gets the mean drop of the windows that cover it
    w = il.attribute(llama, prompt, il.NextToken(" Mary"), method="occlusion", window=3, stride=2)
    starts = sorted(set(range(0, n - 3 + 1, 2)) | {n - 3})
    drops = {}
    for s in starts:
        occluded = ids.clone()
        occluded[0, s:s + 3] = unk
        drops[s] = full - f(occluded)
    ref_w = [np.mean([drops[s] for s in starts if s <= i < s + 3]) for i in range(n)]
    np.testing.assert_allclose(w.scores, ref_w, rtol=1e-4, atol=1e-5)


def _token_local_llama():
    """A tiny Llama with every attention output projection zeroed: each position's logits depend on its
    own token only, so the sum over positions of one logit is exactly additive in which tokens are present."""
    from interpretlm.testing import tiny_lm
    lm = tiny_lm("llama", seed=1)
    with torch.no_grad():
        for layer in range(lm.n_layers):
            lm.site(f"blocks.{layer}.attn").module.weight.zero_()
    return lm


def test_lime_recovers_an_exactly_additive_target():
    sklearn = pytest.importorskip("sklearn.linear_model")
    lm = _token_local_llama()
    prompt = "When Mary and John went to the store, John gave"
    k = lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]
    unk = lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def summed_logit(logits, batch):  # [batch, pos, vocab] -> [batch]
        return logits[:, :, k].float().sum(1)

    ids = torch.tensor([lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        present = lm.model(input_ids=ids).logits[0, :, k].double()
        absent = lm.model(input_ids=torch.full_like(ids, unk)).logits[0, :, k].double()
    w = (present - absent).numpy()  # the planted effect of each token: f = f(nothing) + sum_i z_i w_i
    assert np.abs(w).min() > 1e-3
    # with no penalty the weighted least-squares fit of an exactly linear target is that target
    for regression in ("lasso", "ridge"):
        exact = il.attribute(lm, prompt, summed_logit, method="lime", n_samples=128, seed=0, alpha=0.0,
                             regression=regression)
        np.testing.assert_allclose(exact.scores, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())
        assert min(exact.diagnostics["r2"]) > 1 - 1e-8
    # the defaults: the documented samples (the input itself, then k removed features with k uniform on
    # 1..n, the removed ones chosen uniformly), cosine kernel exp(-d²/(2·0.25²)), scikit-learn's weighted
    # Lasso(alpha=0.01 × the target's weighted standard deviation) on the same samples
    a = il.attribute(lm, prompt, summed_logit, method="lime", n_samples=128, seed=0)
    n = ids.shape[1]
    rng = np.random.default_rng(0)
    removed = rng.integers(1, n + 1, size=128)
    rank = np.argsort(np.argsort(rng.random((128, n)), axis=1), axis=1)  # a uniform random order of the features
    Z = rank >= removed[:, None]
    Z[0] = True
    assert (Z[1:].sum(1) == n - removed[1:]).all() and len(set(removed.tolist())) > n // 2
    y = float(absent.sum()) + Z.astype(float) @ w
    dist = 1 - np.sqrt(Z.sum(1) / n)
    weight = np.exp(-dist ** 2 / (2 * 0.25 ** 2))
    spread = np.sqrt(np.cov(y, aweights=weight, bias=True))  # the penalty is relative to the target's spread
    lasso = sklearn.Lasso(alpha=0.01 * spread, tol=1e-12, max_iter=100_000)
    lasso.fit(Z.astype(float), y, sample_weight=weight)
    np.testing.assert_allclose(a.scores, lasso.coef_, rtol=1e-4, atol=1e-4 * np.abs(w).max())
    assert np.abs(a.scores - w).max() > 1e-3  # the penalty shrinks: the two checks are different
    # Captum's sampling (each feature kept with probability 1/2) and the Hamming kernel, with a ridge
    b = il.attribute(lm, prompt, summed_logit, method="lime", n_samples=128, seed=0, sampling="bernoulli",
                     distance="hamming", kernel_width=1.0, regression="ridge", alpha=1.0)
    Z = np.random.default_rng(0).random((128, n)) < 0.5
    Z[0] = True
    y = float(absent.sum()) + Z.astype(float) @ w
    weight = np.exp(-(1 - Z.sum(1) / n) ** 2 / 2)
    ridge = sklearn.Ridge(alpha=1.0).fit(Z.astype(float), y, sample_weight=weight)
    np.testing.assert_allclose(b.scores, ridge.coef_, rtol=1e-4, atol=1e-4 * np.abs(w).max())


def test_kernel_shap_equals_exact_when_budget_covers_all_coalitions(llama):
    kw = dict(granularity="word")
    exact = il.attribute(llama, "When Mary and John went", " to", method="exact_shap", **kw)
    kern = il.attribute(llama, "When Mary and John went", " to", method="kernel_shap", n_samples=2 ** 5, **kw)
    assert kern.diagnostics["exact"]
    np.testing.assert_allclose(kern.scores, exact.scores, atol=1e-5)


def test_lime_and_kernel_shap_are_reproducible_with_a_seed(llama):
    for method in ("lime", "kernel_shap"):
        a = il.attribute(llama, IOI, il.Contrast(" Mary", " John"), method=method, n_samples=64, seed=3)
        b = il.attribute(llama, IOI, il.Contrast(" Mary", " John"), method=method, n_samples=64, seed=3)
        c = il.attribute(llama, IOI, il.Contrast(" Mary", " John"), method=method, n_samples=64, seed=4)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert not np.allclose(a.scores, c.scores)


def test_continuation_matrix_rows_match_single_token_attributions(llama):
    cont = il.Continuation(" Mary, because")
    a = il.attribute(llama, IOI, cont, method="input_x_gradient")
    k = len(a.rows)
    assert a.scores.shape == (k, len(a.features)) and k == 3
    # one forward; one vector-Jacobian product per row through its retained graph
    assert a.diagnostics["forward_passes"] == 1 and a.diagnostics["backward_passes"] == k
    ids = llama.tokenizer(IOI + " Mary, because", add_special_tokens=False)["input_ids"]
    n = len(ids) - k
    for r in range(k):
        single = il.attribute(llama, ids[:n + r], il.NextToken(ids[n + r]), method="input_x_gradient")
        np.testing.assert_allclose(a.scores[r, :n + r], single.scores, rtol=1e-4, atol=1e-6)
        assert np.isnan(a.scores[r, n + r:]).all()
    # perturbation rows share their passes too, and each row's values add up
    s = il.attribute(llama, IOI, cont, method="kernel_shap", n_samples=64)
    assert s.scores.shape == (k, len(s.features))
    np.testing.assert_allclose(np.nansum(s.scores, 1), s.target_value - s.baseline_value, atol=1e-5)


def test_granularity_masking_and_spans(llama):
    a = il.attribute(llama, "When Mary and John went to the store, John", " gave", method="occlusion",
                     granularity="word", masking="attention")
    assert a.masking == "attention" and a.granularity == "word"
    assert "".join(a.features) == "When Mary and John went to the store, John" and "," in a.features
    b = il.attribute(llama, IOI, " Mary", method="occlusion", spans=["Mary and John", "gave a drink"])
    assert b.features == ["Mary and John", "gave a drink"] and b.granularity == "span"
    assert b.masking == "token:<|endoftext|>"
    with pytest.raises(FeatureError):
        il.attribute(llama, IOI, " Mary", method="occlusion", spans=["not in the prompt"])
    with pytest.raises(UnknownMethodError):
        il.attribute(llama, IOI, " Mary", method="shapley_magic")
    with pytest.raises(ShapleyError, match="granularity='word'"):
        il.attribute(llama, IOI + IOI, " Mary", method="exact_shap")


def test_ig_warns_when_not_converged_and_round_trips(llama, tmp_path):
    with pytest.warns(CompletenessWarning):
        a = il.attribute(llama, IOI, " Mary", method="integrated_gradients", max_evals=9, tol=1e-6)
    assert not a.diagnostics["converged"] and any("max_evals" in w["message"] for w in a.warnings)
    b = il.attribute(llama, "<script>x</script> Mary", " Mary", method="saliency")
    html = b.to_html()
    assert "<script>x" not in html and "&lt;" in html  # every token escaped
    b.save(tmp_path / "a.json")
    c = il.Result.load(tmp_path / "a.json")
    np.testing.assert_allclose(c.scores, b.scores)
    assert c.features == b.features and c.diagnostics["backward_passes"] == 1


def test_faithfulness_and_compare(llama):
    a = il.attribute(llama, IOI, il.Contrast(" Mary", " John"), method="occlusion")
    f = il.faithfulness(llama, a)
    F = len(a.features)
    assert f.deletion.shape == (1, F + 1) and f.insertion.shape == (1, F + 1)
    # the curves start at f(x) / f(nothing) and end at the other
    assert abs(f.deletion[0, 0] - a.target_value) < 1e-4 and abs(f.insertion[0, -1] - a.target_value) < 1e-4
    assert abs(f.deletion[0, -1] - f.insertion[0, 0]) < 1e-4
    for key in ("deletion_aopc", "insertion_aopc", "comprehensiveness", "sufficiency"):
        assert np.isfinite(f.scores[key])
    t = il.compare(llama, IOI, il.Contrast(" Mary", " John"), methods=["saliency", "occlusion", "kernel_shap"],
                   options={"kernel_shap": {"n_samples": 64}})
    assert t.scores.shape == (3, F) and np.allclose(np.diag(t.agreement), 1)
    assert [r["model_evaluations"] for r in t.table][:2] == [1, F + 1]
    assert "Rank agreement" in t.to_html()


def test_rank_correlation():
    assert rank_correlation(np.array([1, 2, 3, 4.0]), np.array([2, 4, 6, 8.0])) == pytest.approx(1)
    assert rank_correlation(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1)


# ---------------------------------------------------------------------------- the default model
@pytest.mark.slow
def test_ig_completeness_on_the_default_model(default_lm):
    a = il.attribute(default_lm, IOI, il.NextToken(" Mary"), method="integrated_gradients")
    assert a.completeness_error <= 0.01 and a.diagnostics["converged"]
    delta = a.target_value - a.baseline_value
    assert abs(a.scores.sum() - delta) <= 0.01 * abs(delta)
    assert a.diagnostics["backward_passes"] >= 1 and a.diagnostics["gradient_evaluations"] <= 1024


@pytest.mark.slow
def test_kernel_shap_matches_exact_shap_on_ten_words(default_lm):
    prompt = "The cat sat on the mat because it was very"
    exact = il.attribute(default_lm, prompt, " tired", method="exact_shap", granularity="word", batch_size=64)
    assert len(exact.features) == 10
    kern = il.attribute(default_lm, prompt, " tired", method="kernel_shap", granularity="word", n_samples=400,
                        seed=0, batch_size=64)
    assert not kern.diagnostics["exact"]
    delta = kern.target_value - kern.baseline_value
    assert abs(kern.scores.sum() - delta) < 1e-6 * max(1, abs(delta))          # efficiency, exactly
    assert rank_correlation(kern.scores, exact.scores) >= 0.95


@pytest.mark.slow
def test_attributions_change_on_a_randomized_model(default_lm):
    a = il.attribute(default_lm, IOI, il.NextToken(" Mary"), method="input_x_gradient")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = il.faithfulness(default_lm, a, randomization=True, stages=(0.5, 1.0))
    assert len(f.randomization) == 2
    assert abs(f.randomization[-1]["spearman"]) < 0.5
    # the trained model's attribution is more faithful than a random order
    assert f.scores["deletion_aopc"] > f.scores["random_deletion_aopc"]


def test_demo_section_and_cli(llama, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from interpretlm import cli
    from interpretlm.attribution.demo_section import attribution_section
    from interpretlm.demo import default_sections

    sec = attribution_section(llama, ["When Mary and John went to the store, John gave a drink to", "The cat sat"])
    assert sec.html.count("il-tokens") == 6 and "kernel_shap" in sec.html and len(sec.text) == 8
    assert attribution_section in default_sections()
    monkeypatch.setattr(il, "load", lambda name="smollm2-135m", **kw: llama)
    out = tmp_path / "a.html"
    res = CliRunner().invoke(cli.app, ["attribute", IOI, "--target", " Mary", "--method", "occlusion",
                                       "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "passes: 1 forward, 0 backward" in res.output and out.read_text().startswith("<!doctype html>")
