"""What the family tables mean, computed by hand: residual writes, the final norm, Gemma 3's
sliding-window attention and post-norms, Phi-3's fused projections."""

import math

import pytest
import torch

import interpretlm as il
from interpretlm.testing import tiny_lm

from conftest import FAMILIES, prompt_for

LONG = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module", params=FAMILIES)
def fam_lm(request):
    return tiny_lm(request.param, seed=0)


def test_last_resid_post_feeds_the_final_norm_exactly(fam_lm):
    lm = fam_lm
    if lm.family.final_norm is None:
        pytest.skip("encoders have no final norm")
    last = f"blocks.{lm.n_layers - 1}.resid_post"
    with torch.no_grad(), lm.capture([last, "final_norm", "unembed"]) as c:
        out = lm.forward([LONG, "When Mary"])
        # the final norm applied to the captured stream is the captured final_norm, bit for bit
        assert torch.equal(lm.final_norm_module()(c[last]), c["final_norm"])
        assert torch.equal(lm.logits_at(c[last]), out.logits)


def test_residual_stream_is_the_sum_of_the_block_writes(fam_lm):
    """resid_post = resid_pre + write(attn) + write(mlp); write is the post-norm (Gemma 3) or the identity."""
    lm = fam_lm
    if lm.family.name == "bert":
        pytest.skip("post-norm encoder blocks normalise the residual stream itself")
    names = [f"blocks.{i}.{c}" for i in range(lm.n_layers) for c in ("resid_pre", "attn", "mlp", "resid_post")]
    with torch.no_grad(), lm.capture(names) as c:
        lm.forward(LONG)
        for i in range(lm.n_layers):
            post = lm.modules(f"blocks.{i}.post_norms") if lm.family.post_norms else []
            a, m = c[f"blocks.{i}.attn"], c[f"blocks.{i}.mlp"]
            if post:
                a, m = post[0](a), post[1](m)
            torch.testing.assert_close(c[f"blocks.{i}.resid_pre"] + a + m, c[f"blocks.{i}.resid_post"],
                                       rtol=1e-4, atol=1e-5)


def test_gated_mlp_neurons_by_hand(fam_lm):
    """mlp.neurons = act(gate(x)) * up(x), with x the input the table's MLP projections see."""
    lm = fam_lm
    if not lm.family.gated_mlp:
        pytest.skip("not a gated MLP")
    x = {}
    inp = lm.modules("blocks.0.mlp_in")[0]
    handle = inp.register_forward_hook(lambda mod, args, out: x.update(x=args[0]))  # returns None: output kept
    try:
        with torch.no_grad(), lm.capture(["blocks.0.mlp.neurons"]) as c:
            lm.forward(LONG)
    finally:
        handle.remove()
    act = lm.module("blocks.0.mlp_act")
    proj = lm.modules("blocks.0.mlp_in")
    with torch.no_grad():
        if len(proj) == 1:  # Phi-3: one fused projection, gate half first
            gate, up = proj[0](x["x"]).chunk(2, dim=-1)
        else:
            gate, up = proj[0](x["x"]), proj[1](x["x"])
        ref = act(gate) * up
    torch.testing.assert_close(c["blocks.0.mlp.neurons"], ref, rtol=1e-4, atol=1e-6)


def _gemma_pattern_by_hand(lm, resid_pre: torch.Tensor, layer: int) -> torch.Tensor:
    """Gemma 3's attention pattern from the residual stream, written out: norm, projections,
    q/k norms, the layer type's rotary base, scaling by query_pre_attn_scalar, causal and
    (on sliding layers) window mask. ``[batch, head, query, key]``."""
    from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

    cfg = lm.model.config
    block = lm.blocks[layer]
    attn = block.self_attn
    b, p, _ = resid_pre.shape
    h = block.input_layernorm(resid_pre)
    dh = cfg.head_dim
    q = attn.q_norm(attn.q_proj(h).view(b, p, -1, dh)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(h).view(b, p, -1, dh)).transpose(1, 2)
    pos = torch.arange(p).unsqueeze(0).expand(b, p)
    cos, sin = lm.model.base_model.rotary_emb(h, pos, cfg.layer_types[layer])
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(cfg.query_pre_attn_scalar)
    qi, ki = torch.arange(p).view(-1, 1), torch.arange(p).view(1, -1)
    allowed = ki <= qi
    if cfg.layer_types[layer] == "sliding_attention":
        allowed &= ki > qi - cfg.sliding_window
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1)


def test_gemma3_sliding_window_pattern_by_hand():
    lm = tiny_lm("gemma3", seed=0)
    cfg = lm.model.config
    assert cfg.layer_types == ["sliding_attention", "full_attention"] and cfg.sliding_window == 4
    names = [f"blocks.{i}.{c}" for i in range(2) for c in ("resid_pre", "attn.pattern")]
    with torch.no_grad(), lm.capture(names) as c:
        lm.forward(LONG)
        for i in range(2):
            ref = _gemma_pattern_by_hand(lm, c[f"blocks.{i}.resid_pre"], i)
            torch.testing.assert_close(c[f"blocks.{i}.attn.pattern"], ref, rtol=1e-4, atol=1e-6)
    p = c["blocks.0.attn.pattern"].shape[-1]
    assert p > 8  # the prompt is longer than twice the window
    far = torch.arange(p).view(-1, 1) - torch.arange(p).view(1, -1) >= 4
    # the sliding layer sees nothing 4 or more positions back; the global layer does
    assert c["blocks.0.attn.pattern"][..., far].abs().max() == 0
    assert c["blocks.1.attn.pattern"][..., far].min() > 0


def test_gemma3_intervention_matches_a_manual_forward():
    """Zeroing head 1 of the sliding layer = running the rest of the model by hand on the edited heads."""
    lm = tiny_lm("gemma3", seed=0)
    with torch.no_grad():
        with lm.capture(["blocks.0.resid_pre", "blocks.0.attn.heads"]) as c:
            ref = lm.forward(LONG).logits
        with lm.intervene({"blocks.0.attn.heads": il.ablate.zero(heads=[1])}), \
                lm.capture(["blocks.0.resid_post"]) as e:
            out = lm.forward(LONG).logits
        heads = c["blocks.0.attn.heads"].clone()
        heads[:, :, 1] = 0
        block = lm.blocks[0]
        b, p = heads.shape[:2]
        mid = c["blocks.0.resid_pre"] + block.post_attention_layernorm(block.self_attn.o_proj(heads.view(b, p, -1)))
        post = mid + block.post_feedforward_layernorm(block.mlp(block.pre_feedforward_layernorm(mid)))
    torch.testing.assert_close(e["blocks.0.resid_post"], post, rtol=1e-4, atol=1e-5)
    assert (out - ref).abs().max() > 1e-3


def test_phi3_fused_qkv_heads_by_hand():
    """attn.heads of Phi-3 = softmax(q kᵀ / √d) v with q, k, v sliced from the fused qkv_proj."""
    lm = tiny_lm("phi3", seed=0)
    assert [type(m).__name__ for m in lm.modules("blocks.0.attn_in")] == ["Linear"]
    with torch.no_grad(), lm.capture(["blocks.1.attn.pattern", "blocks.1.attn.heads"]) as c:
        lm.forward(LONG)
        x = {}
        qkv = lm.modules("blocks.1.attn_in")[0]
        handle = qkv.register_forward_hook(lambda mod, args, out: x.update(v=out))  # returns None: output kept
        try:
            lm.forward(LONG)
        finally:
            handle.remove()
    cfg = lm.model.config
    H, K, dh = cfg.num_attention_heads, cfg.num_key_value_heads, lm.d_head
    v = x["v"][..., (H + K) * dh:]  # the fused output is [q | k | v]
    b, p = v.shape[:2]
    v = v.view(b, p, K, dh).transpose(1, 2).repeat_interleave(H // K, dim=1)
    heads = (c["blocks.1.attn.pattern"] @ v).transpose(1, 2)
    torch.testing.assert_close(c["blocks.1.attn.heads"], heads, rtol=1e-4, atol=1e-6)


def test_post_norms_are_in_the_table_only_for_gemma3(fam_lm):
    lm = fam_lm
    post = lm.modules("blocks.0.post_norms") if lm.family.post_norms else []
    assert bool(post) == (lm.family.name == "gemma3")
    assert all(m in lm.modules("blocks.0.norms") for m in post)  # LRP's norm rule covers them
