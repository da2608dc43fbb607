"""Device maps: a model whose modules accelerate split across devices (here CPU and disk offload, the split a
CPU-only machine can make) gives the numbers of the same model on one device, for every kind of method."""

import pytest
import torch

import interpretlm as il
from interpretlm.errors import ModelLoadError
from interpretlm.testing import save_tiny

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
TARGET = il.Contrast(" Mary", " John")
SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.norm": "cpu", "lm_head": "disk"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = save_tiny(tmp_path_factory.mktemp("tiny"), "llama", seed=5)
    one = il.load(folder)
    split = il.load(folder, device_map=SPLIT, offload_folder=tmp_path_factory.mktemp("offload"))
    return one, split


def _close(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * max(1.0, float(b.abs().max())))


def test_the_split_is_real_and_recorded(models):
    one, split = models
    on_meta = sorted(n for n, p in split.model.named_parameters() if p.device.type == "meta")
    assert on_meta and all(n.startswith(("model.layers.1.", "lm_head")) for n in on_meta)
    assert split.model.hf_device_map["model.layers.1"] == "disk"
    assert split.load_spec["device_map"] == SPLIT and "offload_folder" in split.load_spec
    assert split.fingerprint == one.fingerprint   # read from the offloaded weights, not the meta placeholders


def test_capture_and_intervene_match_one_device(models):
    one, split = models
    names = [n for n in one.component_names() if not n.endswith("attn.pattern")]
    with one.capture(names) as a:
        ref = one.forward(PROMPT).logits
    with split.capture(names) as b:
        out = split.forward(PROMPT).logits
    _close(out, ref)
    for n in names:
        _close(b[n], a[n])
    edit = {"blocks.1.mlp": lambda x: x * 0, "blocks.0.attn.heads": lambda x: x * 0.5}
    with one.intervene(edit):
        ref_edit = one.forward(PROMPT).logits
    with split.intervene(edit):
        out_edit = split.forward(PROMPT).logits
    _close(out_edit, ref_edit)
    assert float((ref_edit - ref).abs().max()) > 1e-3   # the edits changed something


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "lrp"])
def test_attribution_matches_one_device(models, method):
    one, split = models
    _close(il.attribute(split, PROMPT, TARGET, method=method).scores,
           il.attribute(one, PROMPT, TARGET, method=method).scores)


@pytest.mark.parametrize("over", ["resid_pre", "heads"])
def test_patching_matches_one_device(models, over):
    one, split = models
    _close(il.patch(split, PROMPT, CORRUPT, TARGET, over=over).effect,
           il.patch(one, PROMPT, CORRUPT, TARGET, over=over).effect)
    _close(il.attribution_patch(split, PROMPT, CORRUPT, TARGET).effect,
           il.attribution_patch(one, PROMPT, CORRUPT, TARGET).effect)


def test_max_memory_offloads_what_does_not_fit(models, tmp_path):
    one, _ = models
    size = sum(p.numel() * p.element_size() for p in one.model.parameters())
    lm = il.load(one.load_spec["name"], device_map="auto", max_memory={"cpu": size // 2},
                 offload_folder=tmp_path / "off")
    assert "disk" in set(lm.model.hf_device_map.values())
    _close(lm.forward(PROMPT).logits, one.forward(PROMPT).logits)


def test_bad_placement_fails_before_loading(models, tmp_path):
    folder = models[0].load_spec["name"]
    with pytest.raises(ModelLoadError, match="offload_folder"):
        il.load(folder, device_map={"model": "disk"})
    with pytest.raises(ModelLoadError, match="device_map"):
        il.load(folder, max_memory={"cpu": "1GiB"})
    with pytest.raises(ModelLoadError, match="device_map='everywhere'"):
        il.load(folder, device_map="everywhere")
