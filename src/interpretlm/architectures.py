"""Canonical component names and the per-family tables that map them to real modules.

One vocabulary for every architecture (DESIGN.md):

========================  ==============================================================
name                      what it is (shape)
========================  ==============================================================
``embed``                 token embeddings, output of the embedding lookup ``[batch, pos, d_model]``
``blocks.{i}.resid_pre``  residual stream entering block ``i`` ``[batch, pos, d_model]``
``blocks.{i}.attn``       attention output after the output projection ``[batch, pos, d_model]``
``blocks.{i}.attn.heads`` per-head outputs before the output projection ``[batch, pos, head, d_head]``
``blocks.{i}.attn.pattern`` attention probabilities ``[batch, head, query, key]``
``blocks.{i}.mlp.input``  what the MLP reads, after its norm (input of the MLP module) ``[batch, pos, d_model]``
``blocks.{i}.mlp``        MLP output ``[batch, pos, d_model]``
``blocks.{i}.mlp.neurons`` MLP hidden activations (input of its output projection) ``[batch, pos, d_mlp]``
``blocks.{i}.resid_post`` residual stream leaving block ``i`` ``[batch, pos, d_model]``
``final_norm``            output of the final norm ``[batch, pos, d_model]`` (decoders)
``unembed``               logits ``[batch, pos, vocab]`` (models with an LM head)
========================  ==============================================================

A family is a small table of module paths relative to the Hugging Face *base model*
(``model.base_model``) and to one block. The original module tree is never rewritten:
hooks attach to these modules. To support a new family, register a :class:`Family`::

    import interpretlm as il
    il.architectures.register(il.architectures.Family(
        name="my-family", model_types=("my_model",), blocks="layers", embed="embed_tokens",
        final_norm="norm", attn="self_attn", attn_out="self_attn.o_proj",
        mlp_out="mlp.down_proj"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import ComponentError, UnsupportedModelError


@dataclass(frozen=True)
class Family:
    """Where the canonical components live in one architecture family, and its facts.

    Paths are dotted attribute paths. ``blocks``, ``embed``, ``embed_norm`` and
    ``final_norm`` are relative to the base model; ``attn``, ``attn_out``, ``attn_in``,
    ``mlp_in``, ``mlp_act``, ``mlp_out`` and ``norms`` are relative to one block;
    ``head_norms`` and ``head_acts`` to the whole model (heads differ across the model types
    of a family, so the paths a model lacks are skipped). ``attn`` is the module computing
    the attention pattern (returns ``(out, weights)``), ``attn_out`` the attention output
    projection, ``attn_in`` the projections computing queries, keys and values (three, or
    one fused), ``mlp_in`` the MLP's input projections (gate then up for a gated MLP, or one
    fused), ``mlp_act`` its activation module, ``mlp_out`` its output projection, ``norms``
    every norm inside a block. ``norm`` is the kind of every norm of the family (``"rms"`` or
    ``"layer"``); ``gated_mlp`` says the MLP computes ``down(act(gate(x)) * up(x))``;
    ``activation`` names the config fields holding the activation function's name.
    Methods read these facts (LRP's rules, circuit discovery) instead of guessing from class
    names.
    """

    name: str
    model_types: tuple[str, ...]
    blocks: str
    embed: str
    attn: str
    attn_out: str
    mlp_out: str
    final_norm: str | None = None
    causal: bool = True
    examples: tuple[str, ...] = field(default=())
    norm: str | None = None
    gated_mlp: bool = False
    activation: tuple[str, ...] = ("hidden_act",)
    attn_in: tuple[str, ...] = ()
    mlp_in: tuple[str, ...] = ()
    mlp_act: str | None = None
    norms: tuple[str, ...] = ()
    embed_norm: str | None = None
    head_norms: tuple[str, ...] = ()
    head_acts: tuple[str, ...] = ()
    post_norms: tuple[str, ...] = ()

    def block_paths(self) -> dict[str, str | tuple[str, ...]]:
        """The module paths of one block, by part: ``{"attn_out": "self_attn.o_proj", ...}``."""
        parts: dict[str, str | tuple[str, ...] | None] = {
            "attn": self.attn, "attn_in": self.attn_in, "attn_out": self.attn_out, "mlp_in": self.mlp_in,
            "mlp_act": self.mlp_act, "mlp_out": self.mlp_out, "norms": self.norms, "post_norms": self.post_norms}
        return {k: v for k, v in parts.items() if v}


_LLAMA_LIKE = dict(blocks="layers", embed="embed_tokens", final_norm="norm", attn="self_attn",
                   attn_out="self_attn.o_proj", mlp_out="mlp.down_proj", norm="rms", gated_mlp=True,
                   attn_in=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                   mlp_in=("mlp.gate_proj", "mlp.up_proj"), mlp_act="mlp.act_fn",
                   norms=("input_layernorm", "post_attention_layernorm"))

FAMILIES: list[Family] = [
    Family(
        name="llama", model_types=("llama", "mistral", "qwen2", "smollm3", "gemma"),
        examples=("Llama", "Mistral", "Qwen2", "SmolLM"), **_LLAMA_LIKE,
    ),
    Family(  # Llama-like with norms on queries and keys
        name="qwen3", model_types=("qwen3",), examples=("Qwen3",),
        **{**_LLAMA_LIKE, "norms": _LLAMA_LIKE["norms"] + ("self_attn.q_norm", "self_attn.k_norm")},
    ),
    Family(  # Llama-like with parameter-free layer norms
        name="olmo", model_types=("olmo",), examples=("OLMo",), **{**_LLAMA_LIKE, "norm": "layer"},
    ),
    Family(  # Llama-like with fused projections: one qkv_proj, one gate_up_proj (gate first, then up)
        name="phi3", model_types=("phi3",), examples=("Phi-3",),
        **{**_LLAMA_LIKE, "attn_in": ("self_attn.qkv_proj",), "mlp_in": ("mlp.gate_up_proj",),
           "mlp_act": "mlp.activation_fn"},
    ),
    Family(  # Llama-like with norms on queries and keys, and on the attention and MLP outputs before
        # the residual adds (RMSNorm scaled by 1 + weight); sliding-window layers need nothing here:
        # each block is called with its own mask, which hooks and replay pass through unchanged.
        name="gemma3", model_types=("gemma3_text",), examples=("Gemma 3",),
        **{**_LLAMA_LIKE, "activation": ("hidden_activation",),
           "norms": ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm", "self_attn.q_norm", "self_attn.k_norm"),
           "post_norms": ("post_attention_layernorm", "post_feedforward_layernorm")},
    ),
    Family(
        name="gpt2", model_types=("gpt2",),
        blocks="h", embed="wte", final_norm="ln_f",
        attn="attn", attn_out="attn.c_proj", mlp_out="mlp.c_proj",
        examples=("GPT-2", "DistilGPT-2"),
        norm="layer", activation=("activation_function",), attn_in=("attn.c_attn",), mlp_in=("mlp.c_fc",),
        mlp_act="mlp.act", norms=("ln_1", "ln_2"),
    ),
    Family(
        name="gpt_neox", model_types=("gpt_neox",),
        blocks="layers", embed="embed_in", final_norm="final_layer_norm",
        attn="attention", attn_out="attention.dense", mlp_out="mlp.dense_4h_to_h",
        examples=("Pythia", "GPT-NeoX"),
        norm="layer", attn_in=("attention.query_key_value",), mlp_in=("mlp.dense_h_to_4h",), mlp_act="mlp.act",
        norms=("input_layernorm", "post_attention_layernorm"),
    ),
    Family(
        name="bert", model_types=("bert", "roberta", "xlm-roberta", "electra"),
        blocks="encoder.layer", embed="embeddings.word_embeddings", final_norm=None,
        attn="attention.self", attn_out="attention.output.dense", mlp_out="output.dense",
        causal=False, examples=("BERT", "RoBERTa", "MiniLM"),
        norm="layer", attn_in=("attention.self.query", "attention.self.key", "attention.self.value"),
        mlp_in=("intermediate.dense",), mlp_act="intermediate.intermediate_act_fn",
        norms=("attention.output.LayerNorm", "output.LayerNorm"), embed_norm="embeddings.LayerNorm",
        # BERT's, RoBERTa's and ELECTRA's masked-LM heads
        head_norms=("cls.predictions.transform.LayerNorm", "lm_head.layer_norm", "generator_predictions.LayerNorm"),
        head_acts=("cls.predictions.transform.transform_act_fn", "generator_predictions.activation"),
    ),
]


def register(family: Family, model: nn.Module | None = None) -> None:
    """Add (or replace, by name) an architecture family so that its models load.

    The family is first checked on one forward pass of a tiny input (3 tokens): every
    canonical component must be found and come back with its documented shape
    (``[batch, pos, d_model]`` for the residual stream and the block writes,
    ``[batch, pos, head, d_head]`` for ``attn.heads``, ``[batch, head, pos, pos]`` for
    ``attn.pattern``, ``[batch, pos, d_mlp]`` for ``mlp.neurons``). The pass runs on
    ``model`` (a Hugging Face model of the family, e.g. the one you mean to explain), or
    else on a small random model built from transformers' config of the family's first
    model type.

    Raises:
        UnsupportedModelError: a component is missing or has the wrong shape; the message
            lists each problem, e.g. an MLP that flattens batch and position before its
            output projection.

    Example:
        >>> import transformers as tf
        >>> opt = tf.OPTForCausalLM(tf.OPTConfig(hidden_size=32, num_hidden_layers=1, ffn_dim=64,
        ...                         num_attention_heads=2, vocab_size=100, word_embed_proj_dim=32))
        >>> register(Family(name="opt", model_types=("opt",), blocks="decoder.layers",
        ...                 embed="decoder.embed_tokens", final_norm="decoder.final_layer_norm",
        ...                 attn="self_attn", attn_out="self_attn.out_proj", mlp_out="fc2"), opt)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interpretlm.errors.UnsupportedModelError: Family 'opt' does not work as described (checked on one forward pass of 3 tokens): blocks.0.mlp came back with shape (3, 32), ...; blocks.0.mlp.neurons came back with shape (3, 64), expected [batch, pos, d_mlp] = (1, 3, ...). ...
    """
    problems = validate(family, model)
    if problems:
        raise UnsupportedModelError(
            f"Family {family.name!r} does not work as described (checked on one forward pass of 3 tokens): "
            + "; ".join(problems) + ". Fix the paths in Family(...): a component is hooked at the module the path "
            "names (see help(interpretlm.architectures)); a module that reshapes its input (e.g. an MLP that "
            "flattens batch and position) cannot be the hook point of a [batch, pos, ...] component.")
    FAMILIES[:] = [f for f in FAMILIES if f.name != family.name] + [family]


def _tiny_model(family: Family) -> nn.Module:
    """A small random model of the family's first model type, from transformers' config class."""
    import transformers as tf

    mt = family.model_types[0]
    if mt not in tf.CONFIG_MAPPING:
        raise UnsupportedModelError(f"transformers has no config for model type {mt!r}; pass a model of the "
                                    "family to register(family, model) so it can be checked.")
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                 intermediate_size=64, ffn_dim=64, n_inner=64, vocab_size=128, word_embed_proj_dim=32,
                 max_position_embeddings=64, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    cfg = tf.CONFIG_MAPPING[mt]()
    for k, v in small.items():
        if hasattr(cfg, k) or k in getattr(cfg, "attribute_map", {}):
            setattr(cfg, k, v)
    for auto in (tf.AutoModelForCausalLM, tf.AutoModelForMaskedLM, tf.AutoModel):
        try:
            return auto.from_config(cfg).eval()
        except Exception:  # noqa: BLE001  this head does not exist for the type (or the config is odd): next
            continue
    raise UnsupportedModelError(f"Cannot build a model of type {mt!r} to check the family; pass one to "
                                "register(family, model).")


def validate(family: Family, model: nn.Module | None = None) -> list[str]:
    """What is wrong with ``family`` on ``model`` (see :func:`register`): a list of problems, empty if none."""
    from .model import LM  # the handle is built on this module; imported when a family is checked

    model = _tiny_model(family) if model is None else model
    mt = getattr(model.config, "model_type", None)
    if mt not in family.model_types:
        return [f"the model is a {mt!r} model, not one of the family's model types {family.model_types}"]
    saved = list(FAMILIES)
    FAMILIES[:] = [f for f in FAMILIES if f.name != family.name and mt not in f.model_types] + [family]
    problems: list[str] = []
    try:
        try:
            lm = LM(model, tokenizer=None, name=f"check-{family.name}")
        except Exception as exc:  # a wrong path: say which, in the family's words
            return [f"the model cannot be wrapped ({type(exc).__name__}: {exc})"]
        ids = torch.tensor([[1, 2, 3]]) % max(2, lm.vocab_size)
        b, p, L = 1, 3, lm.n_layers
        expected = {"embed": (b, p, lm.d_model)}
        for i in range(L):
            expected.update({f"blocks.{i}.resid_pre": (b, p, lm.d_model), f"blocks.{i}.attn": (b, p, lm.d_model),
                             f"blocks.{i}.attn.heads": (b, p, lm.n_heads, lm.d_head),
                             f"blocks.{i}.mlp": (b, p, lm.d_model), f"blocks.{i}.mlp.neurons": (b, p, None),
                             **({f"blocks.{i}.mlp.input": (b, p, lm.d_model)} if family.mlp_in else {}),
                             f"blocks.{i}.resid_post": (b, p, lm.d_model)})
        if family.final_norm:
            expected["final_norm"] = (b, p, lm.d_model)
        got: dict[str, tuple[int, ...]] = {}
        expected["blocks.0.attn.pattern"] = (b, lm.n_heads, p, p)

        def capture(names: list[str]) -> None:
            with lm.capture(names) as cache, torch.no_grad():
                lm.model(input_ids=ids)
            got.update({n: tuple(cache[n].shape) for n in names})
        try:  # one pass for all; on failure one pass per component, to say which one fails
            capture(list(expected))
        except Exception:  # noqa: BLE001  a family under test may fail in any way; each is reported below
            for name in expected:
                try:
                    capture([name])
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{name} cannot be hooked ({type(exc).__name__}: {exc})")
        for name, shape in got.items():
            want = expected[name]
            if len(shape) != len(want) or any(w is not None and s != w for s, w in zip(shape, want)):
                doc = {"attn.heads": "[batch, pos, head, d_head]", "attn.pattern": "[batch, head, pos, pos]",
                       "mlp.neurons": "[batch, pos, d_mlp]"}.get(name.split(".", 2)[-1], "[batch, pos, d_model]")
                problems.append(f"{name} came back with shape {shape}, expected {doc} = "
                                f"({', '.join('...' if w is None else str(w) for w in want)})")
    finally:
        FAMILIES[:] = saved
    return problems


def family_of(model: nn.Module) -> Family:
    """The :class:`Family` of a Hugging Face model, from ``model.config.model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    known = ", ".join(f"{f.name} ({', '.join(f.model_types)})" for f in FAMILIES)
    raise UnsupportedModelError(
        f"Model type {model_type!r} has no component table. Supported families: {known}. "
        "To add one, describe where its blocks, embeddings, attention and MLP projections "
        "live with interpretlm.architectures.register(Family(...)); see "
        "help(interpretlm.architectures)."
    )


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted attribute path (integers index ModuleLists)."""
    mod = root
    for part in path.split("."):
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


def find_module(root: nn.Module, path: str) -> nn.Module | None:
    """:func:`get_module`, or ``None`` when ``root`` has no module at ``path``."""
    try:
        return get_module(root, path)
    except (AttributeError, IndexError):
        return None


# name pattern -> (kind of hook, where). The kinds are resolved in hooks.py.
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(resid_pre|resid_post|attn|attn\.heads|attn\.pattern|mlp|mlp\.neurons|mlp\.input)$")
BLOCK_COMPONENTS = ("resid_pre", "attn", "attn.heads", "attn.pattern", "mlp.input", "mlp", "mlp.neurons", "resid_post")


@dataclass(frozen=True)
class Site:
    """A resolved component: the module to hook and how to read / write its value.

    ``kind`` is one of ``output`` (the module's output, or its first element when it
    returns a tuple), ``input`` (the first positional input), ``heads`` (the input,
    viewed as ``[batch, pos, head, d_head]``) and ``pattern`` (the second element of the
    attention module's output).
    """

    name: str
    module: nn.Module
    kind: str
    layer: int | None = None


def parse_name(name: str, n_layers: int) -> tuple[int | None, str]:
    """Split a canonical name into (layer, component); raise a helpful error if unknown."""
    if name in ("embed", "final_norm", "unembed"):
        return None, name
    m = _BLOCK_RE.match(name)
    if not m:
        raise ComponentError(
            f"Unknown component name {name!r}. Valid names: 'embed', 'final_norm', 'unembed' "
            f"and 'blocks.{{i}}.<c>' for i in 0..{n_layers - 1} and <c> in "
            f"{', '.join(BLOCK_COMPONENTS)}."
        )
    layer = int(m.group(1))
    if layer >= n_layers:
        raise ComponentError(
            f"Layer {layer} in {name!r} is out of range: the model has {n_layers} blocks "
            f"(0..{n_layers - 1})."
        )
    return layer, m.group(2)


def resolve(model: nn.Module, family: Family, name: str) -> Site:
    """Map a canonical name to a :class:`Site` on ``model``."""
    base = model.base_model
    blocks = get_module(base, family.blocks)
    layer, comp = parse_name(name, len(blocks))
    if comp == "embed":
        return Site(name, get_module(base, family.embed), "output")
    if comp == "final_norm":
        if family.final_norm is None:
            raise ComponentError(f"{family.name} models have no final norm; use "
                                 f"'blocks.{len(blocks) - 1}.resid_post' instead.")
        return Site(name, get_module(base, family.final_norm), "output")
    if comp == "unembed":
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise ComponentError("This model has no language-model head, so it has no 'unembed'; "
                                 "load it with a head (e.g. *ForCausalLM / *ForMaskedLM).")
        return Site(name, head, "output")
    block = blocks[layer]
    table = {
        "resid_pre": (block, "input"),
        "resid_post": (block, "output"),
        "attn": (get_module(block, family.attn_out), "output"),
        "attn.heads": (get_module(block, family.attn_out), "heads"),
        "attn.pattern": (get_module(block, family.attn), "pattern"),
        "mlp": (get_module(block, family.mlp_out), "output"),
        "mlp.neurons": (get_module(block, family.mlp_out), "input"),
    }
    if comp == "mlp.input":   # what the MLP reads (after its norm): the input of the module holding its projections
        if not family.mlp_in:
            raise ComponentError(f"The {family.name!r} family table names no MLP input projection (mlp_in), so "
                                 f"{name!r} cannot be found.")
        first = family.mlp_in[0]
        return Site(name, get_module(block, first.rsplit(".", 1)[0]) if "." in first else get_module(block, first),
                    "input", layer)
    module, kind = table[comp]
    return Site(name, module, kind, layer)


def component_names(n_layers: int, has_head: bool = True, has_final_norm: bool = True) -> list[str]:
    """Every canonical name of a model with ``n_layers`` blocks."""
    names = ["embed"]
    for i in range(n_layers):
        names += [f"blocks.{i}.{c}" for c in BLOCK_COMPONENTS]
    if has_final_norm:
        names.append("final_norm")
    if has_head:
        names.append("unembed")
    return names
