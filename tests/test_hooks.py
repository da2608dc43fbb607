"""Capture and intervention on every family: parity with Hugging Face's own outputs."""

import pytest
import torch

import interpretlm as il
from conftest import prompt_for


def _hf_hidden_states(lm, batch):
    out = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    return out.hidden_states


def test_resid_post_matches_hidden_states(any_lm):
    lm = any_lm
    batch = lm.tokenize([prompt_for(lm), prompt_for(lm) + " and more"])
    names = [f"blocks.{i}.resid_post" for i in range(lm.n_layers)] + [f"blocks.{i}.resid_pre" for i in range(lm.n_layers)]
    with torch.no_grad(), lm.capture(names) as cache:
        lm.forward(batch)
        hs = _hf_hidden_states(lm, batch)
    # hidden_states[0] is the embedding output, [i + 1] block i's output; the last one is after the
    # final norm in decoders, so it is compared only for encoders.
    last = lm.n_layers if lm.family.final_norm is None else lm.n_layers - 1
    for i in range(last):
        torch.testing.assert_close(cache[f"blocks.{i}.resid_post"], hs[i + 1], atol=1e-5, rtol=0)
    for i in range(lm.n_layers):
        torch.testing.assert_close(cache[f"blocks.{i}.resid_pre"], hs[i], atol=1e-5, rtol=0)


def test_identity_intervention_keeps_logits(any_lm):
    lm = any_lm
    p = prompt_for(lm)
    ref = lm.forward(p).logits
    edits = {n: (lambda x: x) for n in [f"blocks.{i}.{c}" for i in range(lm.n_layers)
                                         for c in ("resid_pre", "attn", "attn.heads", "mlp", "mlp.neurons", "resid_post")]}
    edits["embed"] = lambda x: x
    with lm.intervene(edits):
        out = lm.forward(p).logits
    assert (out - ref).abs().max().item() < 1e-5


def _out_proj(lm, layer):
    return lm.site(f"blocks.{layer}.attn").module


def test_heads_through_output_projection_sum_to_attn_output(any_lm):
    lm = any_lm
    layer = lm.n_layers - 1
    with lm.capture([f"blocks.{layer}.attn.heads", f"blocks.{layer}.attn"]) as cache:
        lm.forward(prompt_for(lm))
    heads = cache[f"blocks.{layer}.attn.heads"]  # [batch, pos, head, d_head]
    assert heads.shape[2:] == (lm.n_heads, lm.d_head)
    proj = _out_proj(lm, layer)
    W = proj.weight if isinstance(proj, torch.nn.Linear) else proj.weight.T  # GPT-2 Conv1D stores [in, out]
    W = W.view(W.shape[0], lm.n_heads, lm.d_head)  # [d_model, head, d_head]
    per_head = torch.einsum("bphd,mhd->bphm", heads, W)
    total = per_head.sum(2) + (proj.bias if proj.bias is not None else 0)
    torch.testing.assert_close(total, cache[f"blocks.{layer}.attn"], atol=1e-5, rtol=1e-4)


def test_zero_ablating_a_head_changes_logits(any_lm):
    lm = any_lm
    p = prompt_for(lm)
    ref = lm.forward(p).logits
    with lm.intervene({"blocks.0.attn.heads": il.ablate.zero(heads=[1])}):
        out = lm.forward(p).logits
    assert (out - ref).abs().max().item() > 1e-4
    # and nothing is left behind
    torch.testing.assert_close(lm.forward(p).logits, ref)


def test_pattern_matches_output_attentions_and_restores_attention(any_lm):
    lm = any_lm
    before = lm.model.config._attn_implementation
    batch = lm.tokenize(prompt_for(lm))
    with lm.capture(["blocks.1.attn.pattern"]) as cache:
        lm.forward(batch)
        assert lm.model.config._attn_implementation == "eager"
        ref = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True).attentions[1]
    pat = cache["blocks.1.attn.pattern"]
    assert pat.shape == (1, lm.n_heads, batch.input_ids.shape[1], batch.input_ids.shape[1])
    torch.testing.assert_close(pat, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(pat.sum(-1), torch.ones_like(pat.sum(-1)), atol=1e-5, rtol=0)
    assert lm.model.config._attn_implementation == before


def test_capture_shapes(llama):
    lm = llama
    names = ["embed", "blocks.1.resid_pre", "blocks.1.attn", "blocks.1.attn.heads", "blocks.1.attn.pattern",
             "blocks.1.mlp", "blocks.1.mlp.neurons", "blocks.1.resid_post", "final_norm", "unembed"]
    with lm.capture(names) as c:
        out = lm.forward(["When Mary and John", "When Mary"])
    b, p = out.batch.input_ids.shape
    assert c["embed"].shape == (b, p, lm.d_model)
    assert c["blocks.1.attn.heads"].shape == (b, p, lm.n_heads, lm.d_head)
    assert c["blocks.1.attn.pattern"].shape == (b, lm.n_heads, p, p)
    assert c["blocks.1.mlp.neurons"].shape == (b, p, lm.d_mlp)
    torch.testing.assert_close(c["unembed"], out.logits)


def test_hooks_removed_after_exception(any_lm):
    lm = any_lm
    modules = [m for m in lm.model.modules()]
    def count():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules)
    n0 = count()
    impl0 = lm.model.config._attn_implementation
    with pytest.raises(RuntimeError):
        with lm.capture(["blocks.0.resid_post", "blocks.1.attn.pattern", "blocks.0.attn.heads"]) as cache:
            lm.forward(prompt_for(lm))
            assert count() > n0 and cache["blocks.1.attn.pattern"].shape[1] == lm.n_heads
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with lm.intervene({"blocks.0.mlp.neurons": il.ablate.zero(neurons=[0])}):
            assert count() > n0
            raise RuntimeError("boom")
    assert count() == n0
    # capturing the pattern may switch the attention implementation for the call; it is switched back
    assert lm.model.config._attn_implementation == impl0


def test_gradients_flow_through_interventions(llama):
    lm = llama
    batch = lm.tokenize("When Mary and John went to the store")
    steer = torch.zeros(lm.d_model, requires_grad=True)
    with lm.intervene({"blocks.0.resid_post": il.interventions.add(steer)}):
        score = lm.score(batch, il.NextToken(" Mary"), grad=True)
    score.sum().backward()
    assert steer.grad is not None and steer.grad.abs().sum() > 0
    with lm.capture(["blocks.1.resid_pre"], grad=True) as c:
        s = lm.score(batch, il.NextToken(" Mary"), grad=True)
    (g,) = torch.autograd.grad(s.sum(), c["blocks.1.resid_pre"])
    assert g.abs().sum() > 0


def test_mean_and_resample_ablation(llama):
    lm = llama
    prompts = ["When Mary and John went", "When Tom and Anna went", "The cat sat on the mat"]
    batch = lm.tokenize(prompts)
    with lm.capture(["blocks.0.attn.heads"]) as c:
        lm.forward(batch)
    acts = c["blocks.0.attn.heads"]
    seen = {}
    def spy(x):
        seen["x"] = x
    with lm.intervene({"blocks.0.attn.heads": il.ablate.mean(heads=[0])}), lm.capture(["blocks.0.attn.heads"]) as c2:
        lm.forward(batch)
    after = c2["blocks.0.attn.heads"]
    mu = acts.mean(dim=(0, 1))
    torch.testing.assert_close(after[:, :, 0], mu[0].expand_as(after[:, :, 0]))
    torch.testing.assert_close(after[:, :, 1:], acts[:, :, 1:])
    with lm.intervene({"blocks.0.attn.heads": il.ablate.resample(heads=[2], seed=1)}), lm.capture(["blocks.0.attn.heads"]) as c3:
        lm.forward(batch)
    res = c3["blocks.0.attn.heads"][:, :, 2]
    assert not torch.allclose(res, acts[:, :, 2])
    # each resampled row is some other row's activation
    for i in range(3):
        assert any(torch.allclose(res[i], acts[j, :, 2]) for j in range(3) if j != i)


# ---------------------------------------------------------------- the hook primitive and replay

def test_hook_stop_skips_the_blocks_above(llama):
    lm = llama
    seen, above = [], []
    with lm.capture(["blocks.0.resid_post"]) as cache:
        with lm.hook("blocks.1.resid_pre", read=above.append):
            with lm.hook("blocks.0.resid_post", read=seen.append, stop=True):
                lm.forward("When Mary and John went")
    assert above == []                                     # block 1 never ran
    torch.testing.assert_close(seen[0], cache["blocks.0.resid_post"], atol=0, rtol=0)
    with lm.capture(["blocks.0.resid_post"]) as full:
        lm.forward("When Mary and John went")
    torch.testing.assert_close(seen[0], full["blocks.0.resid_post"], atol=1e-6, rtol=0)


def test_hook_grad_gives_the_exact_softmax_gradient(llama):
    """d log p(t) / d logits = onehot(t) - softmax(logits) at the prediction position."""
    lm = llama
    kept = {}
    with torch.enable_grad(), lm.hook("unembed", read=lambda v: kept.update(v=v), grad=True):
        score = lm.score("When Mary and John went to the store, John gave a drink to", " Mary", grad=True)
    (g,) = torch.autograd.grad(score.sum(), kept["v"])
    last = kept["v"][0, -1].detach()
    ref = -torch.softmax(last, -1)
    ref[lm.tokenizer(" Mary")["input_ids"][0]] += 1
    torch.testing.assert_close(g[0, -1], ref, atol=1e-6, rtol=1e-5)
    assert g[0, :-1].abs().max() == 0


def test_hook_edit_and_logits_at_agree(any_lm):
    lm = any_lm
    if not lm.has_head:
        pytest.skip("needs a head")
    last = f"blocks.{lm.n_layers - 1}.resid_post"
    v = torch.linspace(-1, 1, lm.d_model)
    with lm.capture([last]) as cache:
        base = lm.forward(prompt_for(lm))
    with lm.hook(last, edit=lambda x: x + v):
        edited = lm.forward(prompt_for(lm)).logits
    torch.testing.assert_close(lm.logits_at(cache[last] + v), edited, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lm.logits_at(cache[last]), base.logits, atol=1e-5, rtol=1e-4)


def test_record_and_replay_reproduce_the_forward_pass(any_lm):
    lm = any_lm
    p = prompt_for(lm)
    rec = lm.record([p, p.replace("Mary", "Anna")] if "Anna" not in p else [p, p])
    assert len(rec.resid) == lm.n_layers + 1 and len(rec.calls) == lm.n_layers
    torch.testing.assert_close(rec.replay(0, rec.resid[0]), rec.resid[-1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lm.final_hidden(rec.resid[-1]), rec.output.hidden, atol=1e-5, rtol=1e-4)
    # rows follow their own masks: replay row 1 twice and row 0 once from block 1
    rows = torch.tensor([1, 1, 0])
    out = rec.replay(1, rec.resid[1][rows], rows)
    torch.testing.assert_close(out, rec.resid[-1][rows], atol=1e-5, rtol=1e-4)


def test_head_writes_sum_to_the_attention_output(any_lm):
    lm = any_lm
    with lm.capture(["blocks.1.attn.heads", "blocks.1.attn"]) as c:
        lm.forward(prompt_for(lm))
    writes = lm.head_writes(1, c["blocks.1.attn.heads"])          # [head, batch, pos, d_model]
    bias = lm.site("blocks.1.attn").module.bias
    ref = c["blocks.1.attn"] - (bias if bias is not None else 0)
    torch.testing.assert_close(writes.sum(0), ref, atol=1e-5, rtol=1e-4)


def test_family_table_names_every_norm_and_activation(any_lm):
    """The facts LRP reads: every norm module of the model is in the table, with the table's kind."""
    from interpretlm.attribution.lrp_composite import _rule_modules

    lm = any_lm
    norms, acts, gated = _rule_modules(lm)
    head = lm.model.get_output_embeddings()
    actual = {id(m) for m in lm.model.modules() if m is not head and type(m).__name__.endswith(("Norm", "LayerNorm"))}
    assert {id(m) for m, _ in norms} == actual
    kinds = {kind for _, kind in norms}
    assert kinds == {lm.family.norm}
    assert all(type(m).__name__.endswith(("RMSNorm",)) == (k == "rms") for m, k in norms)
    assert len(acts) >= lm.n_layers and all(not list(m.parameters()) for m in acts)
    assert gated == (list(range(lm.n_layers)) if lm.family.gated_mlp else [])
    # gated MLPs (gate and up projections, separate or fused): the input projections write 2 * d_mlp features
    width = sum(getattr(m, "out_features", getattr(m, "nf", 0)) for m in lm.modules("blocks.0.mlp_in"))
    assert width == (2 if lm.family.gated_mlp else 1) * lm.d_mlp
    assert lm.family.gated_mlp == (lm.family.name in ("llama", "phi3", "gemma3"))
    assert len(lm.modules("blocks.0.attn_in")) in (1, 3)
