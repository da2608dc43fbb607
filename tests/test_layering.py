"""The layers hold: method packages use the core's public API only, the core imports no method
package, and the one attention switch is safe for nested and concurrent callers."""

import ast
import threading
from pathlib import Path

import pytest
import torch

import interpretlm as il
from interpretlm.errors import AttentionImplementationError
from interpretlm.testing import tiny_lm

PKG = Path(il.__file__).parent
# Above the methods: the public API, the command line and the demo compose method packages.
ABOVE = {"__init__", "cli", "demo"}
CORE_PACKAGES = {"viz"}
CORE = {p.stem for p in PKG.glob("*.py")} - ABOVE | CORE_PACKAGES
METHOD_PACKAGES = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()} - CORE_PACKAGES


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module an ``ImportFrom`` reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _core_module(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[0] == "interpretlm" and parts[1] in CORE


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_core_uses(path: Path) -> list[str]:
    """Every private name of a core module that ``path`` imports or reads as ``module._name``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases: dict[str, str] = {}  # local name -> core module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, path)
            for alias in node.names:
                local = alias.asname or alias.name
                if _core_module(f"{source}.{alias.name}") and source in ("interpretlm", "interpretlm.viz"):
                    aliases[local] = f"{source}.{alias.name}"  # `from .. import hooks`: a module
                elif _core_module(source) and _private(alias.name):
                    found.append(f"{path.name}:{node.lineno} imports {source}.{alias.name}")
                elif _core_module(source):
                    aliases.setdefault(local, "")  # a public name; only modules matter below
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _core_module(alias.name):
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    if any(_private(p) for p in alias.name.split(".")):
                        found.append(f"{path.name}:{node.lineno} imports {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                module = aliases.get(value.id) or (value.id if value.id == "interpretlm" else "")
                dotted = ".".join([module] + chain) if module else ""
                if dotted and _core_module(dotted if dotted != "interpretlm" else "interpretlm.x"):
                    found.append(f"{path.name}:{node.lineno} reads {dotted}.{node.attr}")
    return found


def method_files() -> list[Path]:
    return sorted(f for pkg in METHOD_PACKAGES for f in (PKG / pkg).rglob("*.py"))


def test_the_scan_sees_every_kind_of_private_use(tmp_path):
    """The checker itself: each way of reaching a private core name is caught, public ones are not."""
    pkg = PKG / "attribution"
    src = ("from .. import hooks\nfrom ..targets import _gather, as_target\nfrom interpretlm.loading import load\n"
           "import interpretlm.model as M\nfrom ..viz import html as H\n"
           "hooks._register(1)\nM._cfg(2)\nH._private\nhooks.capture\nobj._private\n")
    fake = pkg / "_layering_probe_tmp.py"
    fake.write_text(src)
    try:
        found = private_core_uses(fake)
    finally:
        fake.unlink()
    assert sorted(f.split(" ", 1)[1] for f in found) == sorted([
        "imports interpretlm.targets._gather", "reads interpretlm.hooks._register",
        "reads interpretlm.model._cfg", "reads interpretlm.viz.html._private"])


def test_method_packages_use_only_public_core_names():
    assert {"attribution", "attention_maps", "circuits", "probing", "datasets"} <= METHOD_PACKAGES
    found = [u for f in method_files() for u in private_core_uses(f)]
    assert found == [], "method packages reach into private core names:\n" + "\n".join(found)


def test_core_imports_no_method_package():
    bad = []
    core_files = [PKG / f"{m}.py" for m in CORE if (PKG / f"{m}.py").exists()]
    core_files += [f for p in CORE_PACKAGES for f in (PKG / p).rglob("*.py")]
    for path in core_files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node, path)
                names = [source] + [f"{source}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if len(parts) >= 2 and parts[0] == "interpretlm" and parts[1] in METHOD_PACKAGES:
                    bad.append(f"{path.relative_to(PKG)}:{node.lineno} imports {name}")
    assert sorted(set(bad)) == [], "core modules import method packages:\n" + "\n".join(sorted(set(bad)))


# ---------------------------------------------------------------- the attention switch

def _registries():
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    return (dict(ALL_ATTENTION_FUNCTIONS._local_mapping), dict(AttentionInterface._global_mapping),
            dict(ALL_MASK_ATTENTION_FUNCTIONS._local_mapping), dict(AttentionMaskInterface._global_mapping))


PROMPT = "When Mary and John went to the store, John gave a drink to"
OTHER = "The cat sat on the mat because it was tired"


def _eager_patterns(lm, prompt):
    batch = lm.tokenize(prompt)
    with lm.attention_implementation("eager"):
        out = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True)
    return torch.stack([a[0] for a in out.attentions])  # [layer, head, q, k]


def test_concurrent_pattern_capture_and_forward_are_correct_and_leave_no_trace():
    lm = tiny_lm("llama", seed=5)
    before, registries = lm.model.config._attn_implementation, _registries()
    ref_patterns = _eager_patterns(lm, PROMPT)
    with torch.no_grad():
        ref_logits = lm.forward(OTHER).logits
    start, errors, done = threading.Barrier(2), [], {"patterns": 0, "forward": 0}

    def patterns():
        start.wait()
        for _ in range(15):
            att = il.attention(lm, PROMPT)
            err = float((torch.as_tensor(att.patterns) - ref_patterns).abs().max())
            if err > 1e-5:
                errors.append(f"patterns off by {err}")
            done["patterns"] += 1

    def forward():
        start.wait()
        for _ in range(15):
            with torch.no_grad():
                logits = lm.forward(OTHER).logits
            # sdpa or eager (the other thread's switch): the same numbers up to float32 noise
            err = float((logits - ref_logits).abs().max() / ref_logits.abs().max())
            if err > 1e-5:
                errors.append(f"logits off by {err}")
            done["forward"] += 1

    threads = [threading.Thread(target=patterns), threading.Thread(target=forward)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and done == {"patterns": 15, "forward": 15}
    assert lm.model.config._attn_implementation == before
    assert _registries() == registries


def test_concurrent_lrp_and_patterns_each_get_their_own_attention():
    from interpretlm.attribution.lrp import lrp

    lm = tiny_lm("llama", seed=6)
    registries = _registries()
    ref_scores = lrp(lm, PROMPT, il.NextToken(" Mary")).scores
    ref_patterns = _eager_patterns(lm, OTHER)
    start, results = threading.Barrier(2), {"lrp": [], "att": []}

    def run_lrp():
        start.wait()
        results["lrp"] += [lrp(lm, PROMPT, il.NextToken(" Mary")).scores for _ in range(4)]

    def run_att():
        start.wait()
        results["att"] += [torch.as_tensor(il.attention(lm, OTHER).patterns) for _ in range(4)]

    threads = [threading.Thread(target=run_lrp), threading.Thread(target=run_att)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results["lrp"]) == 4 and len(results["att"]) == 4
    for s in results["lrp"]:
        assert abs(s - ref_scores).max() <= 1e-5 * max(1.0, abs(ref_scores).max())
    for p in results["att"]:
        assert float((p - ref_patterns).abs().max()) <= 1e-5
    assert _registries() == registries


def test_patterns_captured_inside_lrp_keep_lrp_attention():
    """The bug: a pattern captured inside LRP used to switch the model to eager, dropping LRP's rule."""
    from interpretlm.attribution.lrp_composite import lrp_rules

    lm = tiny_lm("llama", seed=7)
    ref = _eager_patterns(lm, PROMPT)
    with lrp_rules(lm) as ledger:
        key = lm.model.config._attn_implementation
        with lm.capture(["blocks.0.attn.pattern", "blocks.1.attn.pattern"]) as cache:
            with torch.enable_grad():
                emb = lm.model.get_input_embeddings()(lm.tokenize(PROMPT).input_ids).detach().requires_grad_(True)
                logits = lm.model(inputs_embeds=emb).logits
            assert lm.model.config._attn_implementation == key  # still LRP's function
        logits[0, -1].max().backward()
    pats = torch.stack([cache["blocks.0.attn.pattern"][0], cache["blocks.1.attn.pattern"][0]])
    torch.testing.assert_close(pats, ref, atol=1e-5, rtol=0)  # LRP's attention returns the probabilities
    assert ledger.absorbed  # and its attention rule ran (the backward pass went through the rules)


def test_nested_switches():
    lm = tiny_lm("gpt2", seed=1)
    before, registries = lm.model.config._attn_implementation, _registries()
    with lm.attention_implementation("eager") as key:
        with lm.attention_implementation("eager"), lm.capture(["blocks.0.attn.pattern"]) as c:
            lm.forward(PROMPT)
        assert key == "eager" == lm.model.config._attn_implementation
        with pytest.raises(AttentionImplementationError, match="cannot be switched on inside"):
            with lm.attention_implementation("sdpa"):
                pass
    assert c["blocks.0.attn.pattern"].shape[1] == lm.n_heads
    # an implementation that exposes no weights: capturing patterns inside it is a clear error
    with lm.attention_implementation("sdpa"):
        with pytest.raises(AttentionImplementationError):
            with lm.capture(["blocks.0.attn.pattern"]):
                pass

    def scaled_dot(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)

    ref = lm.forward(PROMPT).logits
    with pytest.raises(RuntimeError, match="boom"):
        with lm.attention_implementation(scaled_dot) as k:
            assert k.startswith("interpretlm_") and lm.model.config._attn_implementation == k
            torch.testing.assert_close(lm.forward(PROMPT).logits, ref, atol=1e-5, rtol=1e-4)
            raise RuntimeError("boom")
    assert lm.model.config._attn_implementation == before
    assert _registries() == registries
