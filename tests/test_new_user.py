"""What a new user hit, tried as one would (issue 10, point 9): each is a clear error or a warning now."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm import registry
from interpretlm.testing import tiny_lm


# ------------------------------------------------------------------ options that collide with verb keywords
def test_faithfulness_randomization_on_an_ig_result(llama):
    """IG's quadrature option was called ``method`` and collided with il.attribute's ``method=``."""
    a = il.attribute(llama, "a b c d", il.NextToken(5), method="integrated_gradients", max_evals=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = il.faithfulness(llama, a, randomization=True)
    assert [r["stage"] for r in f.randomization]  # the sanity check ran (it re-attributes with IG)
    assert "quadrature" in a.options and "method" not in a.options


def test_quadrature_option_reaches_the_rule(llama):
    """``quadrature="riemann_left"`` with one node is the gradient at the baseline times (x - baseline):
    the renamed option still picks the rule."""
    opts = dict(method="integrated_gradients", refine=False, baseline="zero")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = il.attribute(llama, "a b c", il.NextToken(5), quadrature="riemann_left", n_steps=1, **opts)
        b = il.attribute(llama, "a b c", il.NextToken(5), quadrature="riemann_right", n_steps=1, **opts)
    x = llama.model.get_input_embeddings()(torch.tensor([a.input_ids])).detach()
    e = x.clone().requires_grad_(True)
    f = il.NextToken(5).bind(llama)(llama.forward(torch.tensor([a.input_ids]), inputs_embeds=e))
    (g,) = torch.autograd.grad(f.sum(), e)
    torch.testing.assert_close(torch.tensor(b.scores, dtype=torch.float32), (g * x).sum(-1)[0], rtol=1e-4, atol=1e-6)
    assert a.diagnostics["quadrature"] == "riemann_left" and a.options["quadrature"] == "riemann_left"


@pytest.mark.parametrize("bad", ["method", "progress"])  # "target" is always the target parameter
def test_registry_refuses_options_named_like_verb_keywords(bad):
    ns: dict = {}
    exec(f"def impl(lm, prompt, target=None, *, {bad}='x'):\n    return None", ns)
    with pytest.raises(il.OptionError, match=f"'{bad}' is a keyword of the verbs"):
        registry.register("collides_" + bad, verb="attribute", family="test", takes="prompt",
                          result=il.Result, summary="-")(ns["impl"])
    assert "collides_" + bad not in [m.name for m in il.methods()]


def test_progress_still_reaches_every_loop(llama):
    """patch, ablate, path_patch and probe no longer take progress= themselves: the registry's policy does."""
    seen = []
    il.patch(llama, ["Mary and John, John gave to"], ["Mary and John, Mary gave to"], il.Contrast(5, 7), progress=lambda d, t, desc: seen.append(desc))
    assert any("patch" in s for s in seen)
    assert "progress" not in il.method("patch").options


# ------------------------------------------------------------------ loading
def test_truncated_safetensors_is_a_model_load_error(tmp_path, llama):
    llama.model.save_pretrained(tmp_path)
    llama.tokenizer.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(il.ModelLoadError, match="truncated or corrupt.*Download it again"):
        il.load(str(tmp_path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_on_a_cpu_only_torch_is_a_model_load_error(tmp_path, llama):
    llama.model.save_pretrained(tmp_path)
    llama.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(il.ModelLoadError, match="sees no CUDA GPU.*device='cpu'"):
        il.load(str(tmp_path), device="cuda")
    with pytest.raises(il.ModelLoadError, match="Unknown device"):
        il.load(str(tmp_path), device="gpu0")


@pytest.mark.parametrize("name, close", [("smollm2-135", "smollm2-135m"), ("SmolLM2-135M", "smollm2-135m"),
                                         ("smollm2", "smollm2-135m"), ("minilm-l12", "minilm-l6")])
def test_misspelt_builtin_names_are_never_sent_to_the_hub(monkeypatch, name, close):
    import transformers

    def no_hub(*a, **k):
        raise AssertionError("the hub was asked")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_hub)
    t0 = time.perf_counter()
    with pytest.raises(il.ModelLoadError, match=f"did you mean '{close}'"):
        il.load(name)
    assert time.perf_counter() - t0 < 1.0


def test_names_unlike_builtins_still_go_to_the_hub(monkeypatch):
    import transformers

    asked = []

    def hub(source, **k):
        asked.append(source)
        raise OSError("offline")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", hub)
    with pytest.raises(il.ModelLoadError, match="Cannot find model 'gpt2'"):
        il.load("gpt2")
    assert asked == ["gpt2"]


# ------------------------------------------------------------------ NaN / inf through lm.intervene
PROMPT, CORRUPT = "Mary and John, John gave to", "Mary and John, Mary gave to"


def _poison(value: float):
    return {"blocks.0.mlp": lambda x: torch.full_like(x, value)}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_score_warns_on_non_finite_values(llama, value):
    with llama.intervene(_poison(value)), pytest.warns(il.NonFiniteWarning, match=r"row\(s\) \[0, 1\] of 2"):
        s = llama.score([PROMPT, CORRUPT], il.Contrast(5, 7))
    assert not torch.isfinite(s).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", il.NonFiniteWarning)  # a finite score is silent
        assert torch.isfinite(llama.score([PROMPT], il.Contrast(5, 7))).all()


PROMPT_METHODS = [m.name for m in il.methods(takes="prompt")]


@pytest.mark.parametrize("name", PROMPT_METHODS + ["faithfulness", "compare", "ablate", "probe"])
def test_every_method_fails_its_check_and_says_where_on_nan(llama, name):
    """Occlusion, LRP (conservation), the logit lens, ablation... all fail their check, warn, name a field."""
    m = il.method(name)
    opts = {"kernel_shap": {"n_samples": 32}, "lime": {"n_samples": 32}, "integrated_gradients": {"max_evals": 64},
            "compare": {"methods": ["saliency", "occlusion"], "with_faithfulness": False},
            "ablate": {"heads": [(0, 0)]}, "probe": {"layers": [0, 1], "mdl": False},
            "influences": {"train": [CORRUPT, "The cat sat on the mat"], "projection": 8, "k": 1}}.get(name, {})
    if "transcoders" in m.options:   # attribution graphs: per-layer transcoders of the model
        from interpretlm.features import Dictionary
        opts = {"transcoders": [Dictionary.random(llama.d_model, 16, component=f"blocks.{l}.mlp.input",
                                                  output=f"blocks.{l}.mlp", k=2, seed=l) for l in range(llama.n_layers)]}
    if name == "faithfulness":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = [il.attribute(llama, PROMPT, il.Contrast(5, 7), method="occlusion"), il.Contrast(5, 7)]
    elif name == "probe":
        args = [il.probing.tasks.sentiment(40, seed=0)]
    elif m.takes == "prompt":
        args = [PROMPT] + ([il.Contrast(5, 7)] if m.target != "none" else [])
    else:
        args = [[PROMPT, CORRUPT], il.Contrast(5, 7)]
    with llama.intervene(_poison(float("nan"))), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = registry.call(name, llama, *args, **opts)
    non_finite = [w for w in caught if issubclass(w.category, il.NonFiniteWarning)]
    assert r.check is not None and r.check.passed is False and str(r.check.value) in ("nan", "inf"), r.check
    assert non_finite, [str(w.message) for w in caught]
    assert "non-finite values in the result" in str(non_finite[-1].message)
    assert any(w["category"] == "NonFiniteWarning" for w in r.warnings)  # recorded, so a saved result keeps it
    # Where: the message names a field that holds a NaN.
    path = r.nonfinite()[0][0]
    assert path.split(".")[0].split("[")[0] in str(non_finite[-1].message)


def test_lrp_conservation_and_logit_lens_name_their_fields(llama):
    with llama.intervene(_poison(float("nan"))), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = il.attribute(llama, PROMPT, il.Contrast(5, 7), method="lrp")
        lens = il.logit_lens(llama, PROMPT, il.Contrast(5, 7))
    text = " | ".join(str(w.message) for w in caught if issubclass(w.category, il.NonFiniteWarning))
    assert "diagnostics.conservation_error" in text and a.check.name == "conservation_error"
    assert "logit_lens: non-finite" in text and lens.check.passed is False


@pytest.mark.parametrize("name", ["patch", "attribution_patch", "path_patch", "discover_circuit"])
def test_patching_refuses_a_non_finite_metric_clearly(llama, name):
    opts = {"path_patch": {"senders": [(0, 0)]}, "discover_circuit": {"steps": 2}}.get(name, {})
    with llama.intervene(_poison(float("nan"))), pytest.raises(il.InterpretLMError, match="not finite"):
        if name == "discover_circuit":
            registry.call(name, llama, clean=[PROMPT], corrupted=[CORRUPT], target=il.Contrast(5, 7), **opts)
        else:
            registry.call(name, llama, [PROMPT], [CORRUPT], il.Contrast(5, 7), **opts)


def test_documented_nan_markers_are_not_failures(llama):
    """NaN that means "does not apply" (a regression metric of a class task, a receiver that cannot
    receive) does not fail a clean result."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", il.NonFiniteWarning)
        rep = il.probe(llama, il.probing.tasks.sentiment(40, seed=0), layers=[0, 1], mdl=False)
        pp = il.path_patch(llama, [PROMPT], [CORRUPT], il.Contrast(5, 7), senders=[(0, 0)])
    assert all(v != v for v in rep.scores["r2"]) and rep.check.passed is True
    assert torch.isnan(pp.effect).any() and pp.nonfinite() == []


# ------------------------------------------------------------------ wrong-shaped edits
@pytest.mark.parametrize("edit, match", [
    (lambda lm: il.interventions.replace(torch.zeros(5)), r"replace: the value has shape \(5,\).*\(1, \d+, 64\)"),
    (lambda lm: il.interventions.add(torch.ones(3, 7)), r"add: the value has shape \(3, 7\).*last size \(64,\)"),
    (lambda lm: (lambda x: x[:, :1]), r"returned shape \(1, 1, 64\); it must keep the activation's shape"),
    (lambda lm: (lambda x: x.tolist()), r"returned a list; it must return a tensor"),
])
def test_wrong_shaped_edits_are_component_errors(llama, edit, match):
    with pytest.raises(il.ComponentError, match=match), llama.intervene({"blocks.0.resid_post": edit(llama)}):
        llama.forward(PROMPT)


def test_right_shaped_edits_still_broadcast(llama):
    base = llama.forward(PROMPT).logits
    with llama.intervene({"blocks.0.resid_post": il.interventions.add(torch.zeros(64))}):
        same = llama.forward(PROMPT).logits
    torch.testing.assert_close(same, base)


# ------------------------------------------------------------------ slicing datasets and their answers
def test_datasets_and_answers_slice_together(llama):
    ds = il.datasets.ioi(n=12, seed=0, lm=llama)
    small = ds[:8]
    assert isinstance(small, type(ds)) and len(small) == 8 and small.name == ds.name
    assert small.clean == ds.clean[:8] and small.corrupted == ds.corrupted[:8] and small.meta == ds.meta[:8]
    assert small.target.correct == ds.target.correct[:8] and small.target.wrong == ds.target.wrong[:8]
    assert ds.target[:8] == small.target and len(ds.target) == len(ds)
    picked = ds[[3, 0]]
    assert picked.clean == [ds.clean[3], ds.clean[0]] and picked.target.correct == (ds.target.correct[3],
                                                                                   ds.target.correct[0])
    one = ds[-1]
    assert len(one) == 1 and one.clean == [ds.clean[-1]]
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]
    # The sliced dataset patches exactly like the first 8 rows given by hand.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = il.patch(llama, small.clean, small.corrupted, small.target, over="heads")
        b = il.patch(llama, ds.clean[:8], ds.corrupted[:8], il.datasets.Answers(ds.target.correct[:8],
                                                                                ds.target.wrong[:8]), over="heads")
    torch.testing.assert_close(a.effect, b.effect)


def test_greater_than_target_slices(llama):
    ds = il.datasets.greater_than(n=6, seed=0, lm=llama)
    assert ds[2:5].target.years == ds.target.years[2:5] and len(ds[2:5]) == 3


def test_sliced_prompts_with_the_whole_target_say_how_to_slice(llama):
    ds = il.datasets.ioi(n=12, seed=0, lm=llama)
    with pytest.raises(il.TargetError, match=r"Answers has 12 rows for 8 prompts.*ds\[:8\]"):
        il.patch(llama, ds.clean[:8], ds.corrupted[:8], ds.target, over="heads")


# ------------------------------------------------------------------ multi-byte text
SCRIPTS = {"emoji": ("I ❤ you ❤❤", "❤"), "hebrew": ("שלום עולם", "שלום"), "chinese": ("你好世界", "你好世界"),
           "combining": ("e\u0301te\u0301 ok", "e\u0301te\u0301"), "zwj": ("👨\u200d👩\u200d👧 family", "👨\u200d👩\u200d👧")}


def _check_labels(tok, text, word):
    from interpretlm.attribution.features import build_features
    from interpretlm.tokens import tokenize

    b = tokenize(tok, text, n_ctx=None, add_special_tokens=False)
    labels = b.tokens[0]
    assert "".join(labels) == text  # disjoint character spans: exact in any script
    n_bytes = [len(tok.decode([t]).encode("utf-8", "surrogatepass")) for t in b.input_ids[0].tolist()]
    assert len(labels) > len(text) or max(n_bytes) > 1  # the text really is split into byte pieces
    for lab, (s, e) in zip(labels, b.offsets[0]):
        assert lab in ("", text[s:e]) or text[s:e].endswith(lab)
    words = build_features(b, len(labels), "word").labels
    assert "".join(words) == text and any(w.strip() == word for w in words), words
    # The same labels from the token ids alone (no text): pieces decoded together.
    by_ids = tokenize(tok, [b.input_ids[0].tolist()], n_ctx=None, add_special_tokens=False)
    assert by_ids.tokens[0] == labels and by_ids.texts[0] == text


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_labels_are_exact_for_byte_level_pieces(script):
    from interpretlm.testing import tiny_tokenizer

    _check_labels(tiny_tokenizer("bpe"), *SCRIPTS[script])


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_labels_are_exact_with_the_default_tokenizer(script):
    from interpretlm.datasets.base import default_tokenizer

    _check_labels(default_tokenizer(), *SCRIPTS[script])


def test_hebrew_word_attribution_is_labelled_right(llama):
    """The reported case: word grouping of "שלום" read ' ששלוםם'."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = il.attribute(llama, "שלום", il.NextToken(5), method="occlusion", granularity="word")
    assert a.features == ["שלום"]
    c = il.attribute(llama, "a ❤", il.NextToken(5), method="saliency")
    assert c.features == ["a", " ", "❤", "", ""]


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients", "lrp"])
def test_gradient_methods_with_the_input_cut_off_by_an_intervention(llama, method):
    """Found by the fuzz: a constant edit of the last residual stream left nothing to differentiate (raw
    RuntimeError). The gradient is then exactly zero, and the scores say so."""
    const = {"blocks.1.resid_post": lambda x: torch.ones_like(x)}
    opts = {"max_evals": 16, "n_steps": 5} if method == "integrated_gradients" else {}
    with llama.intervene(const), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = il.attribute(llama, PROMPT, il.Contrast(5, 7), method=method, **opts)
    assert np.allclose(np.nan_to_num(a.scores), 0.0)


def test_ablate_heads_must_be_pairs(llama):
    """Found by make fuzz: `interpretlm ablate ... --heads 99` gave a raw TypeError."""
    for bad in (99, "x", [(0,)], [(0, 9)]):
        with pytest.raises(il.ComponentError):
            il.ablate(llama, [PROMPT, CORRUPT], il.Contrast(5, 7), heads=bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = il.ablate(llama, [PROMPT, CORRUPT], il.Contrast(5, 7), heads=(0, 1))
        listed = il.ablate(llama, [PROMPT, CORRUPT], il.Contrast(5, 7), heads=[(0, 1)])
    assert one.effect == listed.effect
