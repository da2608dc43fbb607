"""The contract every registered method keeps, on every tiny family (a new family gets it for free).

For each method × family: the result saves and reopens equal in a fresh process; a
``<script>`` prompt renders escaped; the check figure is present; bad input raises an
``InterpretLMError`` subclass. On one family (to keep the suite fast): a list of prompts
follows the calling convention, seeded methods reproduce, ``il.rerun`` reproduces, and a
failing check warns and is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import interpretlm as il
from interpretlm import registry
from interpretlm.testing import tiny_lm

FAMILIES = ["llama", "gpt2", "gpt_neox", "bert", "phi3", "gemma3"]
METHODS = [m.name for m in il.methods()]
SCRIPT = "<script></script>"

# Options a method needs (no default) or that keep it fast on tiny models; everything else is default.
OPTIONS = {
    "path_patch": {"senders": [(0, 0)]},
    "ablate": {"heads": [(0, 0)]},
    "kernel_shap": {"n_samples": 32},
    "lime": {"n_samples": 32},
    "compare": {"methods": ["saliency", "kernel_shap"], "with_faithfulness": False,
                "options": {"kernel_shap": {"n_samples": 32}}},
    "probe": {"layers": [0, 1], "mdl": False},
    "discover_circuit": {"steps": 2},
    "integrated_gradients": {"max_evals": 64},
    "exact_shap": {"granularity": "word"},
    "chain_of_thought": {"choices": ["Mary", "John"], "samples": 2, "max_new_tokens": 6},
    "cot_faithfulness": {"tests": ["early_answering", "step_necessity", "filler"]},
    "cot_evaluate": {"choices": ["Mary", "John"], "samples": 1, "max_new_tokens": 4, "tests": ["early_answering"]},
    "mine": {"k": 3, "window": 4},
    "epo": {"length": 4, "population": 3, "swaps": 4, "top_k": 16, "steps": 2},
    "gcg": {"length": 4, "swaps": 4, "top_k": 16, "steps": 2},
    "continuous": {"length": 4, "steps": 2},
    "surrogate": {"calibrate": True},   # random tiny models lean to one verbalizer; calibration splits the classes
    "student": {"layers": 1, "d_model": 16, "heads": 2, "steps": 4},
    "steer": {"strengths": [0.0, 8.0], "prompts": ["Mary and John"], "max_new_tokens": 4},
    "influences": {"train": ["Then John and Mary went home", f"{SCRIPT} The cat sat", "John gave a drink to Mary"],
                   "projection": 8, "k": 2},
    "explain_unit": {"k": 3, "window": 4, "n_explain": 2, "n_windows": 2, "embedder": None, "max_new_tokens": 4},
    "explain_in_words": {"samples": 3, "edits": 1, "max_new_tokens": 4},
}
# Methods that take another method's result: the method whose result they are fed.
RESULT_OF = {"cot_faithfulness": "chain_of_thought"}


def transcoders_for(lm) -> list:
    """Per-layer transcoders of ``lm``'s MLPs (random, writing a tenth of a unit), for ``transcoders=`` options."""
    from interpretlm.features import Dictionary

    tcs = [Dictionary.random(lm.d_model, 16, component=f"blocks.{l}.mlp.input", output=f"blocks.{l}.mlp", k=2, seed=l)
           for l in range(lm.n_layers)]
    for tc in tcs:
        tc.W_dec *= 0.1
    return tcs


def prompts_for(lm, script: bool = False) -> tuple[str, str]:
    """A clean and a corrupted prompt of the same length (a [MASK] where encoders predict)."""
    head = f"{SCRIPT} " if script else ""
    tail = " [MASK]" if lm.family.name == "bert" else ""
    return head + "Mary and John, John gave to" + tail, head + "Mary and John, Mary gave to" + tail


def call_args(m, lm, script: bool = False) -> tuple[list, dict]:
    """Positional inputs (target included) and options to run method ``m`` on ``lm``."""
    clean, corrupted = prompts_for(lm, script)
    target = il.Contrast(5, 7)
    opts = dict(OPTIONS.get(m.name, {}))
    if m.takes in ("prompt", "item"):
        args = [clean]
    elif m.takes == "dataset":
        args = [[clean, corrupted]]
    elif m.takes == "pairs" and m.inputs == ("clean", "corrupted"):
        args = [[clean, clean], [corrupted, corrupted]]
    elif m.takes == "pairs":
        args = [il.datasets.pairs([clean, clean], [corrupted, corrupted], [5, 5], [7, 7], lm=lm)]
        target = None
    elif m.takes == "task":
        args = [il.probing.tasks.sentiment(40, seed=0)]
    elif m.takes == "result" and m.name in RESULT_OF:
        src = il.method(RESULT_OF[m.name])
        src_args, src_opts = call_args(src, lm, script)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = [registry.call(src.name, lm, *src_args, **src_opts)]
    elif m.takes == "result":
        args = [il.attribute(lm, clean, target, method="occlusion")]
    elif m.takes == "unit":
        args = [il.Unit("blocks.1.mlp.neurons", 0)]
        if "corpus" in m.options:   # a small corpus of the prompts (the script one included)
            opts["corpus"] = [clean, corrupted, "Then John and Mary went home"] * 3
    else:  # a new kind of input: the contract test must learn it
        raise AssertionError(f"the contract test does not know how to feed takes={m.takes!r}")
    if "transcoders" in m.options:   # attribution graphs: per-layer transcoders of this model
        opts["transcoders"] = transcoders_for(lm)
    if m.target != "none" and target is not None:
        args.append(target)
    return args, opts


def run(name, lm, script: bool = False, **extra):
    m = il.method(name)
    args, opts = call_args(m, lm, script)
    opts.update(extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return registry.call(name, lm, *args, **opts)


VOLATILE = {"seconds", "cpu_seconds", "prompt", "prompts", "inputs", "model_fingerprint"}


def same(a, b, rtol: float = 1e-4, atol: float = 1e-6, path: str = "") -> None:
    """Recursive equality of plain data, numbers within float noise, volatile keys skipped."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - VOLATILE
        for k in keys:
            assert k in a and k in b, f"{path}.{k} missing on one side"
            same(a[k], b[k], rtol, atol, f"{path}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), f"{path}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, rtol, atol, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        x, y = float(a), float(b)
        if math.isnan(x) or math.isnan(y):
            assert math.isnan(x) and math.isnan(y), f"{path}: {x} vs {y}"
        else:
            assert abs(x - y) <= atol + rtol * abs(y), f"{path}: {x} vs {y}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.fixture(scope="module")
def lms():
    return {f: tiny_lm(f, seed=0) for f in FAMILIES}


@pytest.fixture(scope="module")
def results(lms):
    """Every method on every family, on a prompt that holds ``<script>`` (computed once)."""
    out = {}
    for f, lm in lms.items():
        for name in METHODS:
            out[name, f] = run(name, lm, script=True)
    return out


@pytest.fixture(scope="module")
def reopened(results, tmp_path_factory):
    """Each result saved, then loaded in a fresh Python process and written back as ``to_dict`` JSON."""
    folder = tmp_path_factory.mktemp("contract")
    paths = {}
    for (name, f), r in results.items():
        paths[f"{name}-{f}"] = str(r.save(folder / f"{name}-{f}.json"))
    code = ("import json, sys, interpretlm as il\n"
            "paths = json.loads(sys.argv[1])\n"
            "print(json.dumps({k: il.Result.load(p).to_dict() for k, p in paths.items()}, allow_nan=True))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_every_method_declares_its_contract():
    for m in il.methods():
        assert m.check is not None, f"{m.name} declares no check figure"
        assert m.summary and m.verb and m.family, m.name
        assert m.takes in registry.TAKES
    assert set(METHODS) <= set(dir(il)) | {m.name for m in il.methods() if m.verb != m.name}
    assert all(m.verb in dir(il) for m in il.methods())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", METHODS)
def test_save_load_in_a_fresh_process(name, family, results, reopened):
    r = results[name, family]
    assert r.method == name and r.version == il.__version__ and r.model_fingerprint
    d = json.loads(json.dumps(r.to_dict(), allow_nan=True))
    same(reopened[f"{name}-{family}"], d, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", METHODS)
def test_script_prompt_renders_escaped_and_check_is_present(name, family, results, lms):
    r = results[name, family]
    page = r.to_html()
    assert SCRIPT not in page
    shown = any("<" in t for t in lms[family].tokenize(prompts_for(lms[family], True)[0]).tokens[0])
    if il.method(name).takes == "prompt" and shown:
        assert "&lt;" in page  # the prompt's "<" is shown, escaped
    c = r.check
    assert c is not None and c.name == il.method(name).check.name or c.name
    assert c.value is None or np.isfinite(c.value) or math.isnan(c.value)
    assert "Check" in page


@pytest.mark.parametrize("name", METHODS)
def test_bad_input_raises_an_interpretlm_error(name, lms):
    lm = lms["llama"]
    m = il.method(name)
    args, opts = call_args(m, lm)
    with pytest.raises(il.OptionError, match="Its options"):
        registry.call(name, lm, *args, **opts, no_such_option=1)
    if m.takes in ("prompt", "item"):
        with pytest.raises(il.InterpretLMError):
            registry.call(name, lm, "", *args[1:], **opts)
    if m.target == "required":
        with pytest.raises(il.InterpretLMError):
            registry.call(name, lm, *args[:-1], **opts)


@pytest.mark.parametrize("name", METHODS)
def test_rerun_reproduces(name, results, lms):
    lm = lms["llama"]
    r = results[name, "llama"]
    again = il.rerun(r, lm)
    same(again.to_dict(), r.to_dict())
    with pytest.raises(il.InterpretLMError, match="weights"):
        il.rerun(r, lms["gpt2"])


@pytest.mark.parametrize("name", [m.name for m in il.methods() if m.takes in ("prompt", "item")])
def test_a_list_of_prompts_gives_one_result_per_prompt(name, results, lms):
    lm = lms["llama"]
    m = il.method(name)
    args, opts = call_args(m, lm, script=True)
    other = "Then John and Mary went home"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        listed = registry.call(name, lm, [args[0], other], *args[1:], **opts)
        single = registry.call(name, lm, other, *args[1:], **opts)
    assert isinstance(listed, list) and len(listed) == 2
    same(listed[0].to_dict(), results[name, "llama"].to_dict())
    same(listed[1].to_dict(), single.to_dict())


@pytest.mark.parametrize("name", [m.name for m in il.methods() if m.seeded])
def test_seeded_methods_reproduce(name, results, lms):
    lm = lms["llama"]
    again = run(name, lm, script=True)
    same(again.to_dict(), results[name, "llama"].to_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("name", METHODS)
def test_a_failing_check_warns_and_is_recorded(name, lms, monkeypatch):
    m = il.method(name)
    spec = m.check
    impossible = dataclasses.replace(spec, threshold=math.inf if spec.higher_is_better else -math.inf,
                                     threshold_of=None)
    monkeypatch.setitem(registry._METHODS, name, dataclasses.replace(m, check=impossible))
    lm = lms["llama"]
    args, opts = call_args(m, lm)
    with pytest.warns(il.InterpretLMWarning):
        r = registry.call(name, lm, *args, **opts)
    if r.check.value is not None and np.isfinite(r.check.value):
        assert r.check.passed is False
        assert any(issubclass(registry._category(w["category"]), il.CheckWarning) for w in r.warnings)


def test_targets_round_trip_every_kind(lms):
    lm = lms["llama"]
    kinds = [il.NextToken(" Mary"), il.NextToken(5, kind="prob"), il.Contrast(" Mary", 7), il.Continuation([5, 6]),
             il.Continuation(" Mary went", reduce="mean"),
             il.Label({"yes": [5, 6], "no": 7}, label="no"), il.PooledEmbedding(dim=3),
             il.PooledEmbedding(direction=torch.arange(4.0)), il.FunctionTarget(_logit_of_five),
             il.datasets.Answers([5, 6], [7, 8]), il.datasets.GreaterThan([3, 40])]
    for t in kinds:
        back = il.Target.from_dict(json.loads(json.dumps(t.to_dict())))
        assert type(back) is type(t) and back.to_dict() == t.to_dict()
    # binding returns a new object and leaves the user's target untouched
    t = il.NextToken(5)
    bound = t.bind(lm)
    assert bound is not t and bound.is_bound and not t.is_bound and "token_id" not in vars(t)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.token = 6
    with pytest.raises(il.TargetError, match="not bound"):
        t(lm.forward("a b"))
    with pytest.raises(il.TargetError, match="lambda"):
        il.Target.from_dict(il.FunctionTarget(lambda logits, batch: logits[:, -1, 0]).to_dict())


def _logit_of_five(logits, batch):
    return logits[:, -1, 5]
