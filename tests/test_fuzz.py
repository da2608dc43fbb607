"""Fuzzed entry points (property-based, hypothesis) on tiny models.

Inputs a user may give: odd Unicode (emoji, right-to-left text, zero-width joiners, control
characters), empty and whitespace-only text, text longer than the context, targets of every
kind including malformed ones, out-of-range layer / head / position / token indices, and
NaN or inf injected by an intervention. The invariants, for every entry point:

* nothing but an :class:`~interpretlm.errors.InterpretLMError` is ever raised;
* a NaN or inf in a result is never silent: the result's check fails and a
  :class:`~interpretlm.errors.NonFiniteWarning` is emitted (``lm.score`` warns);
* NaN injected at the embeddings (upstream of everything) always shows in the result.

Profiles (``INTERPRETLM_FUZZ``): ``ci`` (default: 300 derandomized cases per entry point, a
few seconds each on 2 cores) and ``nightly`` (``make fuzz``: 3000 random cases each).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import interpretlm as il  # noqa: E402
from interpretlm.testing import tiny_lm  # noqa: E402

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
           HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True, suppress_health_check=_HEALTH,
                          print_blob=True)
settings.register_profile("nightly", max_examples=3000, deadline=None, suppress_health_check=_HEALTH,
                          print_blob=True)
settings.register_profile("quick", max_examples=40, deadline=None, derandomize=True, suppress_health_check=_HEALTH,
                          print_blob=True)
settings.load_profile(os.environ.get("INTERPRETLM_FUZZ", "ci"))

N_CTX = 48  # small, so "longer than the context" is cheap to build


@functools.cache
def model(family: str = "llama") -> il.LM:
    """Small tiny models (16-d, 2 layers, 2 heads): the fuzz is about inputs, not figures."""
    extra = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, max_position_embeddings=N_CTX)
    if family == "llama":
        extra["num_key_value_heads"] = 1
    if family == "gpt2":
        extra = dict(n_embd=16, n_head=2, n_positions=N_CTX)
    return tiny_lm(family, seed=0, **extra)


# ------------------------------------------------------------------ strategies
ODD = ["😀", "👨\u200d👩\u200d👧", "❤️", "שלום", "مرحبا بك", "\u200f", "\u200e", "\u202e", "\u200d", "\u200b",
       "\x00", "\x07", "\x1b[31m", "\r\n", "\t", "\ufeff", "e\u0301", "你好", "🧑\u200d💻", "\U0010ffff", " ", "\n",
       " Mary", " John", " and", " gave", " to", "<script>", "[MASK]", "<|endoftext|>", "<|im_start|>", "\\", "'"]

WORDS = ["When", " Mary", " and", " John", " went", " to", " the", " store", ",", " gave", " a", " drink", " good",
         " bad", " Paris", "."]
# Mostly text a model can run on (words with odd pieces mixed in), so most cases reach the
# method's computation; the rest are the edge cases themselves.
words_odd = st.lists(st.sampled_from(WORDS * 3 + ODD), min_size=1, max_size=8).map("".join)
texts = st.one_of(
    words_odd, words_odd, words_odd,
    st.lists(st.sampled_from(ODD), min_size=1, max_size=6).map("".join),
    st.text(max_size=10),
    st.sampled_from(["", " ", "\n\t ", "\u200b", "\u200f\u200f"]),
    st.integers(N_CTX + 1, 2 * N_CTX).map(lambda n: " Mary" * n),  # longer than the context
)
short_texts = st.one_of(st.lists(st.sampled_from(ODD), min_size=1, max_size=3).map("".join), st.text(max_size=5))
token_like = st.one_of(st.sampled_from([" Mary", " John", "Mary", "", " ", "😀", "שלום", " Mary John", "\x00"]),
                       st.integers(-3, 600), st.just(10 ** 9))

# A target is drawn as a recipe and built inside the test: building a malformed target may
# itself raise, and must raise an InterpretLMError.
good_targets = st.one_of(
    st.tuples(st.just("next"), st.sampled_from([" Mary", " John", 5, 100])),
    st.tuples(st.just("contrast"), st.just(" Mary"), st.sampled_from([" John", 7])),
    st.tuples(st.just("continuation"), st.sampled_from([" Mary", " John went", " 😀"])),
    st.tuples(st.just("function"), st.just("ok")),
)
targets = st.one_of(
    good_targets, good_targets, good_targets,
    st.tuples(st.just("next"), token_like),
    st.tuples(st.just("contrast"), token_like, token_like),
    st.tuples(st.just("continuation"), short_texts),
    st.tuples(st.just("label"), st.sampled_from(["pos", "neg", "other"]), st.sampled_from([[" good"], [], ["😀"]])),
    st.tuples(st.just("function"), st.sampled_from(["ok", "scalar", "nan", "wrong_shape", "string"])),
    st.tuples(st.just("raw"), st.sampled_from([" Mary", "", 5, -1, 10 ** 9, 2.5, None, [1, 2], {"a": 1}, b"x"])),
)
poisons = st.one_of(st.none(), st.tuples(st.sampled_from(["embed", "blocks.0.mlp", "blocks.1.attn", "blocks.1.resid_post"]),
                                         st.sampled_from([math.nan, math.inf, -math.inf])))

FUNCTIONS = {
    "ok": lambda logits, batch: logits[:, -1].logsumexp(-1),
    "scalar": lambda logits, batch: logits.sum(),
    "nan": lambda logits, batch: logits[:, -1, 0] * math.nan,
    "wrong_shape": lambda logits, batch: logits[:, -1],
    "string": lambda logits, batch: "not a tensor",
}


def build_target(recipe):
    kind, *args = recipe
    if kind == "next":
        return il.NextToken(args[0])
    if kind == "contrast":
        return il.Contrast(args[0], args[1])
    if kind == "continuation":
        return il.Continuation(args[0])
    if kind == "label":
        return il.Label({"pos": [" good"], "neg": args[1]}, label=args[0])
    if kind == "function":
        return il.FunctionTarget(FUNCTIONS[args[0]])
    return args[0]


def poisoned(lm, poison):
    if poison is None:
        return contextlib.nullcontext()
    site, value = poison
    return lm.intervene({site: lambda x: torch.full_like(x, value)})


# ------------------------------------------------------------------ the invariants
def attempt(fn):
    """Run ``fn``; an InterpretLMError is a fine answer (returns None). Any other exception fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except il.InterpretLMError as exc:
            event(f"refused: {type(exc).__name__}" + (f" {str(exc)[:50]}" if os.environ.get("FUZZ_WHY") else ""))
            return None, caught
    event("ran" + (" (non-finite)" if any(issubclass(w.category, il.NonFiniteWarning) for w in caught) else ""))
    return out, caught


def warned_nonfinite(caught) -> bool:
    return any(issubclass(w.category, il.NonFiniteWarning) for w in caught)


def assert_reported(result, caught, poison=None):
    """A NaN or inf in a result is in its check and warned about; embedding poison always shows."""
    results = result if isinstance(result, list) else [result]
    for r in results:
        if isinstance(r, torch.Tensor):
            bad = not torch.isfinite(r).all()
            assert not bad or warned_nonfinite(caught), "lm.score returned NaN/inf without a warning"
            if poison is not None and poison[0] == "embed":
                assert bad and warned_nonfinite(caught)
            continue
        bad = r.nonfinite()
        if bad:
            assert r.check is not None and r.check.passed is False, (r.method, bad, r.check)
            assert warned_nonfinite(caught), (r.method, bad)
            assert any(w["category"] == "NonFiniteWarning" for w in r.warnings)
        if poison is not None and poison[0] == "embed":
            assert bad, f"{r.method}: NaN/inf injected at the embeddings left no trace in the result"


# ------------------------------------------------------------------ entry points
LOAD_NAMES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["smollm2-135", "SmolLM2-135M", "smollm2", "smolm2-135m", "minilm", "minilm-l12", "MiniLM-L6",
                     "", " ", "\x00", "org/model", "./nope", "/nonexistent/folder", "~/nope", "x.gguf", "a" * 300,
                     "../" * 50, "hf://x", "gpt2", "ש/ל", "😀"]),
    st.lists(st.sampled_from(["smollm2", "-", "135m", "minilm", "l6", "/", "."]), min_size=1, max_size=5).map("".join),
)


@given(name=LOAD_NAMES, device=st.sampled_from(["cpu", "cuda", "cuda:3", "mps", "tpu", "", "cpu:0"]),
       dtype=st.sampled_from(["float32", "bf16", "int8", "auto", "float128"]))
def test_fuzz_load_names(monkeypatch, name, device, dtype):
    """Names are handled without touching the network: the hub is replaced by an offline stub."""
    import transformers

    from interpretlm import loading

    if name in loading.BUILTIN:  # the real built-ins load real weights: not a fuzz case
        return

    def offline(source, **kw):
        raise OSError(f"offline: {source}")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    result, _ = attempt(lambda: il.load(name, device=device, dtype=dtype))
    assert result is None  # nothing loads offline from a fuzzed name; all failures were ModelLoadErrors


@given(prompts=st.one_of(texts, st.lists(texts, min_size=0, max_size=3), st.lists(st.integers(-2, 600), max_size=6)),
       target=targets, poison=poisons, family=st.sampled_from(["llama", "gpt2", "bert"]),
       chat=st.booleans())
def test_fuzz_score(prompts, target, poison, family, chat):
    lm = model(family)

    def run():
        with poisoned(lm, poison):
            return lm.score(prompts, build_target(target), chat=chat)
    result, caught = attempt(run)
    if result is not None:
        assert_reported(result, caught, poison)


ATTRIBUTE_OPTIONS = {"integrated_gradients": {"n_steps": 5, "max_evals": 16}, "kernel_shap": {"n_samples": 16},
                     "lime": {"n_samples": 16}, "partition_shap": {"max_evals": 32}}


@given(method=st.sampled_from(il.methods("attribute").names()), prompt=texts, target=targets, poison=poisons,
       granularity=st.sampled_from(["token"] * 3 + ["word", "word", "span", "sentence"]),
       spans=st.one_of(st.none(), st.none(), st.none(), st.lists(st.one_of(short_texts, st.tuples(st.integers(-2, 60), st.integers(-2, 60))),
                                           max_size=2)))
def test_fuzz_attribute(method, prompt, target, poison, granularity, spans):
    lm = model("llama")
    opts = dict(ATTRIBUTE_OPTIONS.get(method, {}))
    if "max_evals" in opts and "max_evals" not in il.method(method).options:
        opts.pop("max_evals")
    if "granularity" in il.method(method).options:
        opts["granularity"] = granularity
    if spans is not None and "spans" in il.method(method).options:
        opts["spans"] = spans

    def run():
        with poisoned(lm, poison):
            return il.attribute(lm, prompt, build_target(target), method=method, **opts)
    result, caught = attempt(run)
    if result is not None:
        assert_reported(result, caught, poison)


@given(prompt=texts, poison=poisons, family=st.sampled_from(["llama", "gpt2", "bert"]),
       layers=st.one_of(st.none(), st.integers(-4, 4), st.lists(st.integers(-4, 4), max_size=3), st.just("all")),
       heads=st.one_of(st.none(), st.lists(st.integers(-3, 3), max_size=2)))
def test_fuzz_attention(prompt, poison, family, layers, heads):
    lm = model(family)
    opts = {k: v for k, v in {"layers": layers, "heads": heads}.items()
            if v is not None and k in il.method("attention").options}

    def run():
        with poisoned(lm, poison):
            return il.attention(lm, prompt, **opts)
    result, caught = attempt(run)
    if result is not None:
        # Poison after layer 0 only reaches later patterns; at the embeddings, every pattern.
        assert_reported(result, caught, poison if poison and poison[0] == "embed" else None)


def _swap(text: str) -> str:
    return text.replace(" Mary", "\0").replace(" John", " Mary").replace("\0", " John")


# Corrupted prompts are mostly the clean ones with the names swapped (same length: patching runs).
ioi_like = st.lists(st.sampled_from(ODD + WORDS), max_size=3).map(lambda o: f"When Mary and John{''.join(o)}, John gave to")
pairs_st = st.one_of(
    st.lists(ioi_like, min_size=1, max_size=3).map(lambda c: (c, [_swap(t) for t in c])),
    st.lists(ioi_like, min_size=1, max_size=3).map(lambda c: (c, [_swap(t) for t in c])),
    st.lists(words_odd, min_size=1, max_size=3).map(lambda c: (c, [_swap(t) for t in c])),
    st.tuples(st.lists(texts, max_size=3), st.lists(texts, max_size=3)),
)


@given(pair=pairs_st, target=targets, poison=poisons,
       over=st.sampled_from(["resid_pre"] * 4 + ["resid_post", "attn", "mlp", "heads", "neurons", "bogus"]),
       positions=st.one_of(st.none(), st.none(), st.none(), st.sampled_from(["each", "last", "all"]), st.integers(-60, 60),
                           st.lists(st.integers(-60, 60), max_size=3)),
       layers=st.one_of(st.none(), st.lists(st.integers(-4, 4), max_size=3)), align=st.booleans())
def test_fuzz_patch(pair, target, poison, over, positions, layers, align):
    lm = model("llama")
    clean, corrupted = pair
    opts = {"over": over, "align": align}
    if positions is not None:
        opts["positions"] = positions
    if layers is not None:
        opts["layers"] = layers

    def run():
        with poisoned(lm, poison):
            return il.patch(lm, clean, corrupted, build_target(target), **opts)
    result, caught = attempt(run)
    if result is not None:
        assert_reported(result, caught)


records = st.one_of(
    # balanced two-class tasks on odd texts (they train), ...
    st.lists(words_odd, min_size=6, max_size=12).map(
        lambda ts: [{"text": t, "label": ["pos", "neg"][i % 2]} for i, t in enumerate(ts)]),
    st.lists(words_odd, min_size=6, max_size=12).map(
        lambda ts: [{"text": t, "label": float(i % 3)} for i, t in enumerate(ts)]),
    # ... and anything: empty texts, a single class, NaN / inf labels
    st.lists(st.fixed_dictionaries({"text": texts, "label": st.one_of(
        st.sampled_from(["pos", "neg"]), st.integers(0, 2), st.floats(allow_nan=True, allow_infinity=True))}),
        min_size=0, max_size=10))


@given(recs=records, poison=poisons, layers=st.one_of(st.just("all"), st.integers(-3, 3),
                                                      st.lists(st.integers(-3, 3), min_size=1, max_size=2)),
       probe=st.sampled_from(["auto", "logistic", "ridge", "bogus"]), control=st.booleans())
def test_fuzz_probe(recs, poison, layers, probe, control):
    from interpretlm.probing.tasks.jsonl import from_records

    lm = model("llama")

    def run():
        task = from_records(recs)
        with poisoned(lm, poison):
            return il.probe(lm, task, layers=layers, probe=probe, control=control, mdl=False, seed=0)
    result, caught = attempt(run)
    if result is not None:
        assert_reported(result, caught)


CLI_WORDS = st.one_of(texts.filter(lambda t: "\x00" not in t),
                      st.sampled_from(["--layers", "--heads", "-h", "--bogus", "ioi", "induction", "x.jsonl", "1,2",
                                       "--positions", "--over", "heads", "--method", "lrp", "--n-samples", "-1", "[]"]))


@given(command=st.sampled_from(["attribute", "attention", "patch", "logit_lens", "probe", "ablate", "methods",
                                "attention_rollout", "bogus"]),
       words=st.one_of(st.lists(words_odd, min_size=1, max_size=1), st.lists(words_odd, min_size=1, max_size=1),
                       st.lists(ioi_like, min_size=2, max_size=2), st.lists(CLI_WORDS, max_size=3)),
       target=st.one_of(st.just(" Mary"), st.just(" Mary"), st.none(), token_like.map(str).filter(lambda t: "\x00" not in t)),
       method=st.one_of(st.none(), st.sampled_from(il.methods("attribute").names() + ["nope"])),
       extra=st.lists(st.tuples(st.sampled_from(["--layers", "--positions", "--over", "--granularity", "--device",
                                                 "--dtype", "--contrast", "--heads"]),
                                st.sampled_from(["0", "99", "-1", "1,2", "all", "x", "", "nan", "None", "cuda"])),
                      max_size=2))
def test_fuzz_cli(monkeypatch, command, words, target, method, extra):
    from click.testing import CliRunner

    from interpretlm import cli

    lm = model("llama")
    monkeypatch.setattr(il, "load", lambda name="smollm2-135m", **kw: lm)
    args = [command, *words]
    if target is not None:
        args += ["--target", target]
    if method is not None and command == "attribute":
        args += ["--method", method]
    if command in ("attribute", "patch", "probe", "ablate"):
        args += ["--n-samples", "16"] if command == "attribute" and method in ("lime", "kernel_shap") else []
    for flag, value in extra:
        args += [flag, value]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(cli.app, args)
    event(f"exit {res.exit_code}" + (f" {res.output[-60:]}" if os.environ.get("FUZZ_WHY") else ""))
    # A usage error or an InterpretLMError exits with a message; nothing else escapes as a traceback.
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, repr(res.exception))
    assert res.exit_code in (0, 1, 2), (args, res.exit_code, res.output[-300:])
