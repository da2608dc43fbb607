"""Attention patterns: parity with output_attentions, memory, planted heads, rollout and flow."""

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm.testing import tiny_lm


def prompt_for(lm):
    return "When Mary and [MASK] went to the store" if lm.family.name == "bert" else "When Mary and John went to the store"


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert", "gpt_neox"])
def test_patterns_equal_output_attentions(family):
    lm = tiny_lm(family, seed=0)
    prompt = prompt_for(lm)
    att = il.attention(lm, prompt)
    batch = lm.tokenize(prompt)
    previous = lm.model.config._attn_implementation
    lm.model.set_attn_implementation("eager")
    try:
        out = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True)
    finally:
        lm.model.set_attn_implementation(previous)
    ref = torch.stack([a[0] for a in out.attentions])       # [layers, heads, q, k]
    assert att.patterns.shape == ref.shape                   # llama: all 4 query heads (2 key/value heads)
    assert float((att.patterns - ref).abs().max()) < 1e-5
    assert float((att.pattern(1, 3) - ref[1, 3]).abs().max()) < 1e-5
    assert lm.model.config._attn_implementation == previous


def test_only_asked_layers_and_heads_are_kept():
    lm = tiny_lm("llama", seed=0, num_hidden_layers=4)
    att = il.attention(lm, "When Mary and John went to the store", layers=[1], heads=[0, 2])
    n = len(att.tokens)
    assert tuple(att.patterns.shape) == (1, 2, n, n)
    assert att.diagnostics["layers_run"] == 2               # stopped after layer 1 of 4
    full = il.attention(lm, "When Mary and John went to the store")
    assert torch.equal(att.pattern(1, 2), full.pattern(1, 2))
    with pytest.raises(il.ComponentError):
        att.pattern(2, 0)
    with pytest.raises(il.ComponentError):
        il.attention(lm, "text", layers=[4])
    with pytest.raises(il.ComponentError):
        il.attention(lm, "text", heads=[7])


def _planted_gpt2(seq_len=10, slots=16):
    """A 2-layer GPT-2 whose layer-0 head 0 attends to the previous token and layer-1 head 0 does induction.

    Residual layout: token one-hot (dims 0..15), position one-hot (16..47), and a slot
    (48..63) where the previous-token head writes the previous token's one-hot.
    """
    lm = tiny_lm("gpt2", seed=0, n_embd=128, n_head=2, n_positions=32)
    m, d, hd = lm.model, 128, 64
    T, P, S = 0, slots, slots + 32
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for mod in m.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.fill_(1.0)
        wte = m.transformer.wte.weight
        for i in range(wte.shape[0]):
            wte[i, T + i % slots] = 1.0
        for p in range(32):
            m.transformer.wpe.weight[p, P + p] = 1.0
        c = 3.0
        # layer 0, head 0: query = position p, key = position p + 1  ->  attends to p - 1
        w0 = m.transformer.h[0].attn.c_attn.weight               # [d, 3d]: q | k | v
        for p in range(31):
            w0[P + p, p] = c                                     # q, head 0, dim p
            w0[P + p, d + p + 1] = c                             # k, head 0, dim p + 1
        for t in range(slots):
            w0[T + t, 2 * d + t] = 1.0                           # v: token identity
            m.transformer.h[0].attn.c_proj.weight[t, S + t] = 1.0  # written to the previous-token slot
        # layer 1, head 0: query = current token, key = previous token  ->  induction
        w1 = m.transformer.h[1].attn.c_attn.weight
        for t in range(slots):
            w1[T + t, t] = c
            w1[S + t, d + t] = c
    return lm


def test_heads_summary_finds_planted_induction_and_previous_token_heads():
    lm = _planted_gpt2()
    g = torch.Generator().manual_seed(0)
    first = torch.randperm(16, generator=g)[:10]              # 10 distinct random tokens
    ids = torch.cat([first, first]).tolist()                  # ... repeated twice
    s = il.attention(lm, ids).heads_summary()
    prev, ind = s["previous_token"], s["induction"]
    assert s.score("previous_token", 0, 0) > 0.9
    assert s.score("induction", 1, 0) > 0.9
    # low for every other head
    assert s.score("induction", 0, 0) < 0.2 and s.score("induction", 0, 1) < 0.2 and s.score("induction", 1, 1) < 0.2
    assert s.score("previous_token", 1, 0) < 0.3 and s.score("previous_token", 1, 1) < 0.3
    assert s.top("induction", 1)[0][:2] == (1, 0) and s.top("previous_token", 1)[0][:2] == (0, 0)
    assert np.isfinite(prev).all() and np.isfinite(ind).all()


def test_head_scores_on_exact_patterns():
    from interpretlm.attention_maps import head_scores
    n = 4
    prev = torch.zeros(n, n)
    prev[0, 0] = 1
    for q in range(1, n):
        prev[q, q - 1] = 1
    s = head_scores(torch.stack([prev, torch.eye(n)]), torch.tensor([1, 2, 1, 2]))
    assert s["previous_token"].tolist() == pytest.approx([1.0, 0.0])   # mean over queries q >= 1
    assert s["self"].tolist() == pytest.approx([0.25, 1.0])
    assert s["entropy"].tolist() == pytest.approx([0.0, 0.0])
    assert s["mean_distance"].tolist() == pytest.approx([0.75, 0.0])
    # queries 2 and 3 repeat tokens 0 and 1: induction targets keys 1 and 2; a previous-token head hits them
    assert s["induction"].tolist() == pytest.approx([1.0, 0.0])


def test_rollout_is_the_product_of_residual_mixed_layers():
    lm = tiny_lm("gpt2", seed=0, n_layer=3)
    prompt = "When Mary and John went to the store"
    att = il.attention(lm, prompt)
    mixes = []
    for layer in range(3):
        a = 0.5 * att.patterns[layer].mean(0) + 0.5 * torch.eye(len(att.tokens))
        mixes.append(a / a.sum(-1, keepdim=True))
    expected = mixes[2] @ mixes[1] @ mixes[0]
    r = il.attention_rollout(lm, prompt)
    assert float((r.matrix - expected).abs().max()) < 1e-6
    assert r.diagnostics["row_sum_error"] < 1e-5
    from interpretlm.attention_maps import rollout_matrix
    assert float((rollout_matrix(att.patterns) - r.matrix).abs().max()) < 1e-6
    with pytest.raises(il.ContextLengthError):
        il.attention_flow(lm, prompt, max_tokens=3)


def _exact_flows(mixes, positions):
    """Max flow from input token k to top-layer position p on the layered graph whose edge
    (layer l, key k) -> (layer l + 1, query q) has capacity mixes[l][q, k], by Edmonds-Karp."""
    import networkx as nx
    from networkx.algorithms.flow import edmonds_karp

    n = mixes[0].shape[0]
    g = nx.DiGraph()
    for layer, m in enumerate(mixes):
        for q in range(n):
            for k in range(n):
                if float(m[q, k]) > 0:
                    g.add_edge((layer, k), (layer + 1, q), capacity=float(m[q, k]))
    top = len(mixes)
    return np.array([[nx.maximum_flow_value(g, (0, k), (top, p), flow_func=edmonds_karp)
                      if (0, k) in g and (top, p) in g else 0.0 for k in range(n)] for p in positions])


def test_attention_flow_equals_the_exact_max_flow():
    lm = tiny_lm("gpt2", seed=0, n_layer=3)
    prompt = "When Mary and John went to the store"
    att = il.attention(lm, prompt)  # the patterns, checked against output_attentions above
    n = len(att.tokens)
    for residual in (True, False):
        mixes = []
        for layer in range(3):
            a = att.patterns[layer].double().mean(0)
            if residual:
                a = 0.5 * a + 0.5 * torch.eye(n, dtype=torch.float64)
            mixes.append((a / a.sum(-1, keepdim=True)).numpy())
        f = il.attention_flow(lm, prompt, positions=[2, -1], residual=residual)
        assert f.positions == [2, n - 1] and f.matrix.shape == (2, n)
        ref = _exact_flows(mixes, [2, n - 1])
        np.testing.assert_allclose(f.matrix.numpy(), ref, rtol=1e-4, atol=1e-6)
        # causal attention: nothing flows from tokens after the position; every earlier token reaches it,
        # each with less than the one unit a single path of full capacity would carry
        assert np.all(ref[0, 3:] == 0) and ref[0, :3].min() > 0.01
        assert 0 < ref[1].min() and ref[1].max() < 1


def test_result_round_trip_and_html(tmp_path):
    lm = tiny_lm("llama", seed=0)
    att = il.attention(lm, "<b>Mary</b> and John", layers=[0, 1])
    back = il.Result.load(att.save(tmp_path / "att.json"))
    assert torch.equal(torch.as_tensor(back.patterns), att.patterns) and back.layers == [0, 1]
    html = att.to_html()
    assert "<b>Mary" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "il-attn" in html


@pytest.mark.slow
def test_default_model_gqa_shows_all_query_heads(default_lm):
    att = il.attention(default_lm, "The cat sat on the mat because it was tired", layers=[0, 5, 29])
    assert att.patterns.shape[:2] == (3, 9)
    assert att.pattern(layer=5, head=3).shape == (len(att.tokens), len(att.tokens))
    assert att.diagnostics["row_sum_error"] < 1e-5


@pytest.mark.skipif(not __import__("shutil").which("chromium"), reason="needs a headless chromium")
def test_view_mounts_and_responds_in_a_real_browser(tmp_path):
    """The page's script runs offline: it mounts, and hovering a token repaints (timed)."""
    import re
    import subprocess

    lm = tiny_lm("llama", seed=0)
    att = il.attention(lm, "When <Mary> & John went to the store, John gave a drink to")
    page = att.to_html().replace("</body>", """<script>
var root=document.querySelector("div.il-attn"), spans=root.querySelectorAll(".il-attn-text bdi");
spans[3].dispatchEvent(new Event("mouseenter"));
root.setAttribute("data-q-bg", spans[1].style.background || "none");
root.setAttribute("data-n-thumbs", root.querySelectorAll(".il-attn-model canvas").length);
</script></body>""")
    path = tmp_path / "att.html"
    path.write_text(page, encoding="utf-8")
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert re.search(r'data-il-mount-ms="\d+"', dom)
    assert 'data-n-thumbs="8"' in dom                       # 2 layers x 4 heads as small multiples
    assert 'data-q-bg="rgb(' in dom                         # hovering token 3 colours what it attends to
    assert "&lt;" in dom and "<Mary" not in dom              # tokens set as text, never as HTML


def test_a_list_of_prompts_gives_one_result_each_padding_removed():
    lm = tiny_lm("gpt2", seed=0)
    prompts = ["When Mary and John went to the store", "The cat sat"]
    both = il.attention(lm, prompts, layers=[1], batch_size=2)
    assert len(both) == 2
    for p, r in zip(prompts, both):
        alone = il.attention(lm, p, layers=[1])
        assert r.tokens == alone.tokens
        assert float((r.patterns - alone.patterns).abs().max()) < 1e-5


def test_demo_section():
    from interpretlm.attention_maps.demo_section import attention_section
    from interpretlm.demo import DEMO_PROMPTS
    sec = attention_section(tiny_lm("llama", seed=0), DEMO_PROMPTS)
    assert "il-attn" in sec.html and "rollout" in sec.html and "2 layers × 4 heads" in sec.text[0]
