"""Circuit analysis on tiny models of every family: exact references, sanity checks, bad input."""

import warnings

import pytest
import torch

import interpretlm as il
from interpretlm.circuits import NoiseWarning, PatchingError, normaliser
from interpretlm.errors import CheckWarning
from interpretlm.testing import tiny_lm

from conftest import FAMILIES

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def inputs(lm):
    if lm.family.name == "bert":
        return ("When Mary and John went to the store, John gave a drink to [MASK]",
                "When Mary and John went to the store, Mary gave a drink to [MASK]", il.Contrast("Mary", "John"))
    return CLEAN, CORRUPT, il.Contrast(" Mary", " John")


def pearson(a, b):
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.fixture(scope="module", params=FAMILIES)
def wide_lm(request):
    """A tiny model of each family whose clean and corrupted metrics differ by >= 0.1.

    At the default initialisation (std 0.02) the tiny models barely tell CLEAN from CORRUPT
    (|clean - corrupted| from 1e-4 for BERT to 9e-3 for Llama), so normalised effects carry
    float noise of 1e-5 and more; with std 0.2 the gap is 0.12 (GPT-2) to 0.5 (BERT).
    """
    return tiny_lm(request.param, seed=0, initializer_range=0.2)


@pytest.mark.parametrize("over", ["resid_pre", "resid_post", "attn", "mlp", "heads"])
def test_batched_replay_equals_one_forward_per_patch(wide_lm, over):
    c, x, t = inputs(wide_lm)
    fast = il.patch(wide_lm, c, x, t, over=over, engine="replay", batch_size=7)
    loop = il.patch(wide_lm, c, x, t, over=over, engine="loop")
    gap = fast.clean_value - fast.corrupt_value
    assert abs(gap) >= 0.1
    # the metric after each patch, unnormalised: the same to float32 precision (relative 1e-4)
    scale = max(abs(fast.clean_value), abs(fast.corrupt_value), 1.0)
    torch.testing.assert_close(fast.patched, loop.patched, rtol=1e-4, atol=1e-4 * scale)
    # normalised effects: 1e-4 of the clean-corrupted gap (measured differences: <= 1e-5)
    torch.testing.assert_close(fast.effect, loop.effect, rtol=0, atol=1e-4)
    assert fast.diagnostics["engine"] == "replay" and loop.diagnostics["engine"] == "loop"
    assert fast.effect.abs().max() > 0.1  # something was patched
    assert not fast.warnings  # no noise warning, no failed sanity check


def test_suffix_replay_equals_the_full_replay(wide_lm):
    """On a causal model a replay from position d (prefix keys/values from the record) equals
    the full replay at positions >= d and leaves the prefix as recorded; encoders refuse it."""
    rec = wide_lm.record([CLEAN, "When Tom and Anna went to the park, Anna gave"])  # padded second row
    if not wide_lm.is_causal:
        assert not rec.suffix_supported()
        return
    assert rec.suffix_supported()
    d, rows = 5, torch.tensor([1, 0, 1])
    g = torch.Generator().manual_seed(0)
    h = rec.resid[1][rows].clone()
    h[:, d:] += torch.randn(h[:, d:].shape, generator=g)
    full = rec.replay(1, h, rows)
    part = rec.replay(1, h[:, d:], rows, from_pos=d)
    scale = float(full.abs().max())
    torch.testing.assert_close(part, full[:, d:], rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(full[:, :d], rec.resid[-1][rows][:, :d], rtol=1e-4, atol=1e-4 * scale)


def test_patches_that_change_nothing_cost_no_replay():
    """Before the first token where clean and corrupted differ, the clean residual stream is the
    corrupted one: those patches give the corrupted value exactly, and the rest replay only the suffix."""
    lm = tiny_lm("llama", seed=0, initializer_range=0.2)
    c, x, t = inputs(lm)
    first = next(i for i, (a, b) in enumerate(zip(lm.tokenize(c).input_ids[0], lm.tokenize(x).input_ids[0]))
                 if a != b)
    p = il.patch(lm, c, x, t, over="resid_pre")
    assert first > 3 and (p.patched[:, :first] == p.corrupt_value).all()
    width, L = p.effect.shape[1], lm.n_layers
    # the record, its check replay, the prefix keys/values, the suffix check, the clean run
    # and the replays of positions first.. only
    full = 1 + 1 + sum((L - l) / L for l in range(L)) * width
    assert p.diagnostics["forward_passes"] < 0.6 * full


def test_replay_with_padding_and_eager_attention():
    """Rows of different lengths (padding masks) and eager attention (explicit 4-d masks)."""
    lm = tiny_lm("llama", attn_implementation="eager")
    clean = [CLEAN, "When Tom and Anna went to the park, Anna gave a ball to"]
    corrupt = [CORRUPT, "When Tom and Anna went to the park, Tom gave a ball to"]
    t = il.datasets.Answers([" Mary", " Tom"], [" John", " Anna"])
    for over, pos in [("resid_pre", "last"), ("heads", "all"), ("mlp", "all")]:
        fast = il.patch(lm, clean, corrupt, t, over=over, positions=pos, engine="replay")
        loop = il.patch(lm, clean, corrupt, t, over=over, positions=pos, engine="loop")
        assert torch.allclose(fast.effect, loop.effect, atol=1e-5)


def test_sanity_points(wide_lm):
    """Point 3: a whole clean layer restores everything, nothing patched changes nothing."""
    c, x, t = inputs(wide_lm)
    tol = 1e-4
    p = il.patch(wide_lm, c, x, t, over="resid_pre", positions="all")
    assert torch.allclose(p.effect, torch.ones(wide_lm.n_layers), atol=tol)
    q = il.patch(wide_lm, c, x, t, over="resid_post", positions="all")
    assert torch.allclose(q.effect, torch.ones(wide_lm.n_layers), atol=tol)
    assert abs(p.diagnostics["sanity_nothing_patched"]) < tol
    if wide_lm.is_causal:
        last = il.patch(wide_lm, c, x, t, over="resid_post", positions="last")
        assert last.effect[-1] == pytest.approx(1.0, abs=1e-5)
        each = il.patch(wide_lm, c, x, t, over="resid_post", positions="each", layers=[-1])
        assert each.effect[0, -1] == pytest.approx(1.0, abs=1e-5)
        assert each.effect[0, :-1].abs().max() < 1e-5  # earlier positions cannot reach the last logits


def test_normaliser_flags_a_gap_at_float_noise():
    eps = torch.finfo(torch.float32).eps
    assert normaliser(0.5, -0.5, dtype=torch.float32) == (1.0, None)
    # the floor is 1000 eps x max(|clean|, |corrupted|, 1): just below it warns, just above it does not
    denom, msg = normaliser(10.0, 10.0 - 900 * eps * 10, dtype=torch.float32)
    assert denom == pytest.approx(900 * eps * 10) and "float noise" in msg
    assert normaliser(10.0, 10.0 - 1100 * eps * 10, dtype=torch.float32)[1] is None
    assert normaliser(0.0, 900 * eps, dtype=torch.float32)[1] is not None  # the size is at least 1
    # a gap that float32 resolves is noise in float16 (eps 2**13 times larger)
    assert normaliser(1.0, 0.5, dtype=torch.float32)[1] is None
    assert normaliser(1.0, 0.5, dtype=torch.float16)[1] is not None
    with pytest.raises(PatchingError, match="same on clean"):
        normaliser(0.25, 0.25, dtype=torch.float32)


def _noise_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    emitted = [str(w.message) for w in caught if issubclass(w.category, NoiseWarning)]
    recorded = [w["message"] for w in result.warnings if w["category"] == "NoiseWarning"]
    assert emitted == recorded  # emitted once and recorded in the result
    return recorded


def test_circuit_methods_warn_when_clean_and_corrupted_barely_differ():
    """The default tiny BERT's metric moves by ~1e-4 between CLEAN and CORRUPT: below the float32 floor."""
    calls = {
        "patch": lambda lm, c, x, t: il.patch(lm, c, x, t, over="resid_pre", positions="all"),
        "attribution_patch": lambda lm, c, x, t: il.attribution_patch(lm, c, x, t, over="heads"),
        "path_patch": lambda lm, c, x, t: il.path_patch(lm, c, x, t, senders=[(0, 1)]),
        "discover_circuit": lambda lm, c, x, t: il.discover_circuit(lm, clean=c, corrupted=x, target=t, keep=3),
    }
    noisy = tiny_lm("bert", seed=0)
    c, x, t = inputs(noisy)
    for name, call in calls.items():
        msgs = _noise_warnings(lambda: call(noisy, c, x, t))
        assert len(msgs) == 1 and "float noise" in msgs[0], name
    gap = float(noisy.score(c, t) - noisy.score(x, t))
    assert 0 < abs(gap) < 1e3 * torch.finfo(torch.float32).eps
    # the same prompts on a BERT that tells them apart (gap ~0.5): no warning from any method
    clear = tiny_lm("bert", seed=0, initializer_range=0.2)
    for name, call in calls.items():
        assert _noise_warnings(lambda: call(clear, c, x, t)) == [], name


def test_grouped_query_attention_heads_without_ungrouping(llama):
    assert llama.n_kv_heads < llama.n_heads
    p = il.patch(llama, CLEAN, CORRUPT, il.Contrast(" Mary", " John"), over="heads")
    assert tuple(p.effect.shape) == (llama.n_layers, llama.n_heads)
    assert p.axes == ["layer", "head"]


def test_bad_inputs(llama):
    t = il.Contrast(" Mary", " John")
    with pytest.raises(PatchingError, match="tokens"):
        il.patch(llama, CLEAN, "When Mary went to the store, Mary gave a drink to", t)
    with pytest.raises(PatchingError, match="same on clean"):
        il.patch(llama, CLEAN, CLEAN, t)
    with pytest.raises(PatchingError, match="over"):
        il.patch(llama, CLEAN, CORRUPT, t, over="neurons")
    with pytest.raises(PatchingError, match="out of range"):
        il.patch(llama, CLEAN, CORRUPT, t, positions=[99])
    with pytest.raises(PatchingError, match="corrupted prompt for each"):
        il.patch(llama, [CLEAN, CLEAN], [CORRUPT], t)
    with pytest.raises(il.InterpretLMError):
        il.ablate(llama, CLEAN, t, heads=[(0, 17)])
    with pytest.raises(il.InterpretLMError):
        il.path_patch(llama, CLEAN, CORRUPT, t, senders=[])


def test_align_patches_prompts_of_different_lengths(llama):
    t = il.Contrast(" Mary", " John")
    short = "Mary and John went to the store, Mary gave a drink to"  # one token shorter
    p = il.patch(llama, CLEAN, short, t, over="resid_pre", align=True)
    assert p.effect.shape[1] == len(llama.tokenize(short).tokens[0])
    # the whole corrupted prompt replaced at layer 0 by the aligned clean tail
    assert torch.isfinite(p.effect).all()


def test_attribution_patching_tracks_exact_patching(llama):
    ds = il.datasets.ioi(n=4, seed=0, lm=llama)
    for over in ("heads", "mlp", "resid_pre"):
        exact = il.patch(llama, ds.clean, ds.corrupted, ds.target, over=over)
        ig = il.attribution_patch(llama, ds.clean, ds.corrupted, ds.target, over=over, estimator="eap_ig", steps=8)
        assert pearson(ig.effect, exact.effect) > 0.95
        assert ig.diagnostics["completeness_error"] < 0.05  # integrated gradients add up
    ap = il.attribution_patch(llama, ds.clean, ds.corrupted, ds.target, over="heads", estimator="attribution")
    assert ap.diagnostics["forward_passes"] == 2 * 4 and ap.diagnostics["backward_passes"] == 4
    assert pearson(ap.effect, il.patch(llama, ds.clean, ds.corrupted, ds.target, over="heads").effect) > 0.9


def test_attribution_patching_is_exact_for_a_linear_metric():
    """With a metric linear in the last residual stream, the first-order term is the patching effect."""
    lm = tiny_lm("bert", head=False)  # no final norm: the last hidden state is the last resid_post
    w = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))
    t = il.PooledEmbedding(direction=w, pooling="first")
    exact = il.patch(lm, CLEAN, CORRUPT, t, over="resid_post", layers=[lm.n_layers - 1], positions="each")
    ap = il.attribution_patch(lm, CLEAN, CORRUPT, t, over="resid_post", layers=[lm.n_layers - 1],
                              estimator="attribution")
    assert exact.effect[0, 0] == pytest.approx(1.0, abs=5e-4)
    assert torch.allclose(ap.effect, exact.effect, atol=5e-4)


def test_path_patching_matches_a_hand_built_reference(llama):
    t = il.Contrast(" Mary", " John")
    L = llama.n_layers
    r = il.path_patch(llama, CLEAN, CORRUPT, t, senders=[(L - 1, 1)], receivers="logits")
    # reference: head clean, the MLP after it frozen at its corrupted value
    names = [f"blocks.{L - 1}.attn.heads", f"blocks.{L - 1}.mlp"]
    with llama.capture(names) as cc:
        vc = float(llama.score(CLEAN, t))
        llama.forward(CLEAN)
    with llama.capture(names) as xc:
        llama.forward(CORRUPT)
    vx = float(llama.score(CORRUPT, t))
    clean_heads, x_mlp = cc[names[0]].clone(), xc[names[1]].clone()
    with llama.intervene({names[0]: il.interventions.replace(clean_heads[:, :, 1:2], heads=[1]),
                          names[1]: lambda x: x_mlp}):
        v = float(llama.score(CORRUPT, t))
    assert r.effect[0] == pytest.approx((v - vx) / (vc - vx), abs=1e-5)
    h = il.path_patch(llama, CLEAN, CORRUPT, t, senders=[(0, 1)], receivers="heads")
    assert torch.isnan(h.effect[0]).all() and torch.isfinite(h.effect[1:]).all()


def test_ablation_matches_foundation_edits(any_lm):
    c, _, t = inputs(any_lm)
    r = il.ablate(any_lm, c, t, heads=[(1, 2)], kind="zero")
    with any_lm.intervene({"blocks.1.attn.heads": il.ablate.zero(heads=[2])}):
        ref = float(any_lm.score(c, t))
    assert float(r.ablated_value) == pytest.approx(ref, abs=1e-5)
    sweep = il.ablate(any_lm, c, t, heads="each", kind="zero")
    assert float(sweep.ablated_value[1, 2]) == pytest.approx(ref, abs=1e-5)


def test_mean_and_resample_ablation(llama):
    ds = il.datasets.ioi(n=6, seed=1, lm=llama)
    t = ds.target
    m = il.ablate(llama, ds.clean, t, mlps=[0], kind="mean")
    with llama.capture("blocks.0.mlp") as cache:
        llama.forward(ds.clean)
    mu = cache["blocks.0.mlp"].mean(0, keepdim=True)  # one length: a mean per position
    with llama.intervene({"blocks.0.mlp": lambda x: mu.expand_as(x)}):
        ref = llama.score(ds.clean, t)
    assert torch.allclose(m.per_prompt, ref, atol=1e-5)
    s = il.ablate(llama, ds.clean, t, heads="each", kind="resample", seed=3)
    j = il.ablate(llama, ds.clean, t, heads=[(1, 0)], kind="resample", seed=3)
    assert float(s.ablated_value[1, 0]) == pytest.approx(float(j.ablated_value), abs=1e-5)
    with pytest.raises(PatchingError):
        il.ablate(llama, CLEAN, il.Contrast(" Mary", " John"), heads=[(0, 0)], kind="resample")


def test_logit_lens_last_layer_is_the_model(any_lm):
    if not any_lm.is_causal:
        pytest.skip("the lens reads the next-token position")
    lens = il.logit_lens(any_lm, CLEAN, " Mary", k=3)
    assert lens.diagnostics["final_layer_error"] < 1e-5
    assert len(lens.layers) == any_lm.n_layers + 1
    top = any_lm.top_tokens(CLEAN, k=1)[0][0][0]
    assert lens.top_tokens[-1][0] == top
    logits = any_lm.forward(CLEAN).logits[0, -1]
    mary = any_lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]
    assert int(lens.target_rank[-1]) == int((logits > logits[mary]).sum())


def test_discovery_conserves_and_keeping_everything_is_faithful(any_lm):
    if any_lm.family.name == "bert":
        pytest.skip("post-norm encoder blocks: edge scores are approximate")
    c, x, t = inputs(any_lm)
    if any_lm.family.post_norms:
        # Gemma 3 normalises each block's attention and MLP output before the residual add, so the
        # edge scores (writes through the output projection) do not add up: the method must warn
        with pytest.warns(il.CheckWarning, match="do not add up"):
            full = il.discover_circuit(any_lm, clean=c, corrupted=x, target=t, keep=1.0, estimator="eap")
        assert full.diagnostics["conservation_error"] > 0.1
        assert full.faithfulness == pytest.approx(1.0, abs=1e-5)  # keeping every edge is still the model
        return
    full = il.discover_circuit(any_lm, clean=c, corrupted=x, target=t, keep=1.0, estimator="eap")
    assert full.diagnostics["conservation_error"] < 1e-4
    assert full.faithfulness == pytest.approx(1.0, abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        few = il.discover_circuit(any_lm, clean=c, corrupted=x, target=t, keep=3)
    assert len(few.edges) == 3
    assert abs(few.edges[0]["score"]) >= abs(few.edges[-1]["score"])
    html = few.to_html()
    assert "<svg" in html and "<script" not in html


def test_results_round_trip(tmp_path, llama):
    t = il.Contrast(" Mary", " John")
    results = [il.patch(llama, CLEAN, CORRUPT, t, over="heads"), il.ablate(llama, CLEAN, t, heads=[(0, 1)]),
               il.logit_lens(llama, CLEAN, " Mary"),
               il.path_patch(llama, CLEAN, CORRUPT, t, senders=[(0, 1)])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results.append(il.discover_circuit(llama, clean=CLEAN, corrupted=CORRUPT, target=t, keep=4))
    for i, r in enumerate(results):
        back = il.Result.load(r.save(tmp_path / f"r{i}.json"))
        assert type(back) is type(r)
        assert back.to_html() == r.to_html()


def test_html_escapes_tokens(llama):
    p = il.patch(llama, "<script>alert(1)</script> Mary", "<script>alert(1)</script> John", " Mary")
    assert "<script>alert" not in p.to_html()


def test_falls_back_to_full_forward_passes_when_replay_disagrees(llama):
    from interpretlm.circuits.patching import run_patches
    from interpretlm.circuits.runner import BlockRunner
    from interpretlm.circuits.sweep import Patch

    t = il.Contrast(" Mary", " John").bind(llama)
    xb = t.prepare(llama, llama.tokenize(CORRUPT))
    runner = BlockRunner(llama, xb, t)
    with llama.capture("blocks.1.attn.heads") as cache:
        llama.forward(CLEAN)
    patches = [Patch(1, "heads", torch.ones(1, xb.input_ids.shape[1], dtype=torch.bool), (h,)) for h in range(4)]
    replayed, used, _ = run_patches(runner, patches, lambda c, l: cache["blocks.1.attn.heads"])
    assert used == "replay"
    runner.check_error = 1.0  # as if a block's call arguments could not be replayed
    with pytest.warns(UserWarning, match="full forward pass"):
        looped, used, _ = run_patches(runner, patches, lambda c, l: cache["blocks.1.attn.heads"])
    assert used == "loop" and torch.allclose(looped, replayed, atol=1e-5)


def test_atp_star_qk_fix_beats_plain_atp_on_a_saturated_softmax():
    """Planted: the last block's queries and keys scaled 16x (its softmax puts up to 0.996 on one
    key) and its MLP removed, so the softmax is the main nonlinearity after resid_pre of that block."""
    lm = tiny_lm("llama")
    last = lm.n_layers - 1
    with torch.no_grad():
        for m in lm.modules(f"blocks.{last}.attn_in")[:2]:  # q_proj, k_proj
            m.weight.mul_(16.0)
        lm.module(f"blocks.{last}.mlp_out").weight.zero_()
    t = il.Contrast(" Mary", " John")
    with lm.capture([f"blocks.{last}.attn.pattern"]) as c:
        lm.forward(CORRUPT)
    assert float(c[f"blocks.{last}.attn.pattern"][0, :, -1].max()) > 0.99  # saturated
    exact = il.patch(lm, CLEAN, CORRUPT, t, over="resid_pre").effect[last]
    with pytest.warns(CheckWarning):
        plain = il.attribution_patch(lm, CLEAN, CORRUPT, t, over="resid_pre", estimator="attribution").effect[last]
    with pytest.warns(CheckWarning):
        star = il.attribution_patch(lm, CLEAN, CORRUPT, t, over="resid_pre", estimator="atp_star",
                                    graddrop=False).effect[last]
    err_plain, err_star = float((plain - exact).abs().sum()), float((star - exact).abs().sum())
    assert err_star < 0.75 * err_plain


def test_attribution_patch_completeness_threshold_per_estimator(llama):
    ds = il.datasets.ioi(n=4, seed=0, lm=llama)
    for method, threshold in (("attribution", 1.0), ("atp_star", 1.0), ("eap_ig", 0.1), ("eap_ig_act", 0.1),
                              ("eap_ig_tok", 0.1)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = il.attribution_patch(llama, ds.clean, ds.corrupted, ds.target, over="heads", estimator=method)
        assert r.check.threshold == threshold
        failed = r.diagnostics["completeness_error"] > threshold
        assert (r.check.passed is False) == failed
        assert any(issubclass(w.category, CheckWarning) for w in caught) == failed
    # GradDrop costs one more backward pass per layer than the QK fix alone
    a = il.attribution_patch(llama, ds.clean, ds.corrupted, ds.target, over="resid_pre", estimator="atp_star")
    assert a.diagnostics["backward_passes"] == (1 + llama.n_layers) * 4
    assert a.diagnostics["forward_passes"] == 2 * 4


def test_ig_over_activations_is_exact_for_a_linear_metric():
    """A metric linear in the last residual stream: one midpoint step already integrates exactly."""
    lm = tiny_lm("bert", head=False)  # no final norm: the last hidden state is the last resid_post
    w = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))
    t = il.PooledEmbedding(direction=w, pooling="first")
    exact = il.patch(lm, CLEAN, CORRUPT, t, over="resid_post", layers=[lm.n_layers - 1], positions="each")
    ig = il.attribution_patch(lm, CLEAN, CORRUPT, t, over="resid_post", layers=[lm.n_layers - 1],
                              estimator="eap_ig_act", steps=1)
    assert torch.allclose(ig.effect, exact.effect, atol=5e-4)
    assert ig.diagnostics["completeness_error"] < 5e-4


def test_ig_over_activations_integrates_each_node_path(llama):
    """Exact references where the layer's path is one node's path: CLEAN and CORRUPT differ in one
    token, so at block 0's input only that position moves and its estimate is the exact patching
    effect (up to the quadrature error); on heads, a layer's row adds up to patching the whole
    attention output of that layer (``over="attn"``, all positions), computed by ``il.patch``."""
    t = il.Contrast(" Mary", " John")
    exact = il.patch(llama, CLEAN, CORRUPT, t, over="resid_pre")
    ig = il.attribution_patch(llama, CLEAN, CORRUPT, t, over="resid_pre", estimator="eap_ig_act", steps=16)
    assert torch.allclose(ig.effect[0], exact.effect[0], atol=2e-3)
    # every resid_pre layer patched at all positions is the clean run: each row adds up to 1
    assert torch.allclose(ig.effect.sum(1), torch.ones(llama.n_layers), atol=2e-3)
    assert ig.diagnostics["completeness_error"] < 2e-3
    assert ig.diagnostics["forward_passes"] == 2 + 16 * llama.n_layers
    assert ig.diagnostics["backward_passes"] == 16 * llama.n_layers
    heads = il.attribution_patch(llama, CLEAN, CORRUPT, t, over="heads", estimator="eap_ig_act", steps=16)
    attn = il.patch(llama, CLEAN, CORRUPT, t, over="attn", positions="all")
    assert torch.allclose(heads.effect.sum(1), attn.effect, atol=2e-3)
    # the layer-0 residual is integrated too, for the completeness check
    assert heads.diagnostics["forward_passes"] == 2 + 16 * (llama.n_layers + 1)


def test_ig_over_activations_rows_of_many_layers_share_a_pass(llama):
    """Batches mix rows of different layers and steps; each row's edit must touch only its own layer."""
    ds = il.datasets.ioi(n=3, seed=0, lm=llama)
    one = il.attribution_patch(llama, ds.clean, ds.corrupted, ds.target, over="heads", estimator="eap_ig_act",
                               steps=3, batch_size=1).effect
    mixed = il.attribution_patch(llama, ds.clean, ds.corrupted, ds.target, over="heads", estimator="eap_ig_act",
                                 steps=3, batch_size=7).effect
    assert torch.allclose(one, mixed, rtol=1e-4, atol=1e-6 * float(one.abs().max()))


def test_token_path_ig_integrates_each_differing_token_alone(llama):
    """Three names differ (an ABC corruption): at block 0's input each differing position's path
    is its own patch, so the estimate there is the exact patching effect (up to the quadrature
    error of 16 midpoint steps); with one differing token the one path is EAP-IG's."""
    t = il.Contrast(" Mary", " John")
    abc = "When Anna and Tom went to the store, Tom gave a drink to"
    exact = il.patch(llama, CLEAN, abc, t, over="resid_pre")
    tok = il.attribution_patch(llama, CLEAN, abc, t, over="resid_pre", estimator="eap_ig_tok", steps=16)
    assert float(exact.effect[0].abs().max()) > 0.1  # the reference is not all zeros
    assert torch.allclose(tok.effect[0], exact.effect[0], atol=2e-3)
    # three tokens' paths and the joint one, 16 steps each
    assert tok.diagnostics["forward_passes"] == 2 + 16 * 4 and tok.diagnostics["backward_passes"] == 16 * 4
    assert tok.diagnostics["completeness_error"] < 0.01
    one = il.attribution_patch(llama, CLEAN, CORRUPT, t, over="resid_pre", estimator="eap_ig_tok", steps=4)
    ig = il.attribution_patch(llama, CLEAN, CORRUPT, t, over="resid_pre", estimator="eap_ig", steps=4)
    assert torch.equal(one.effect, ig.effect) and one.diagnostics["forward_passes"] == 2 + 4


def test_attribution_patch_default_picks_the_estimator_per_grid(llama):
    """The default (``auto``) is what the README's estimator table picks: integrated gradients over each
    layer's activation on heads, along token paths elsewhere; the same numbers as asking for them."""
    t = il.Contrast(" Mary", " John")
    heads = il.attribution_patch(llama, CLEAN, CORRUPT, t, over="heads")
    assert heads.options["estimator"] == "auto" and heads.diagnostics["estimator"] == "eap_ig_act"
    assert heads.check.threshold == 0.1
    assert torch.equal(heads.effect, il.attribution_patch(llama, CLEAN, CORRUPT, t, over="heads",
                                                          estimator="eap_ig_act").effect)
    resid = il.attribution_patch(llama, CLEAN, CORRUPT, t, over="resid_pre")
    assert resid.diagnostics["estimator"] == "eap_ig_tok"
    assert torch.equal(resid.effect, il.attribution_patch(llama, CLEAN, CORRUPT, t, over="resid_pre",
                                                          estimator="eap_ig_tok").effect)
