"""The model handle :class:`LM`: a Hugging Face model, its tokenizer and its component table."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import hooks
from .architectures import Family, Site, component_names, family_of, resolve
from .attention_switch import AttentionSwitch
from .errors import ComponentError, NonFiniteWarning
from .targets import TargetLike, as_target
from .tokens import Batch, Prompts, tokenize


@dataclass
class Output:
    """One forward pass.

    Attributes:
        logits: ``[batch, pos, vocab]`` (``None`` for a model without an LM head).
        hidden: ``[batch, pos, d_model]`` last hidden state of the base model.
        batch: the :class:`~interpretlm.tokens.Batch` that was run.
    """

    logits: torch.Tensor | None
    hidden: torch.Tensor
    batch: Batch


@dataclass
class ModelInfo:
    """What :meth:`LM.info` reports."""

    name: str
    family: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    vocab_size: int
    n_ctx: int | None
    causal: bool
    has_head: bool
    n_params: int
    dtype: str
    device: str
    attention: str
    components: list[str]

    def __str__(self) -> str:
        comps = ["embed", "blocks.{i}.resid_pre", "blocks.{i}.attn", "blocks.{i}.attn.heads",
                 "blocks.{i}.attn.pattern", "blocks.{i}.mlp", "blocks.{i}.mlp.neurons", "blocks.{i}.resid_post"]
        comps += [c for c in ("final_norm", "unembed") if c in self.components]
        gqa = f" ({self.n_kv_heads} key/value heads)" if self.n_kv_heads != self.n_heads else ""
        lines = [
            f"{self.name}  [{self.architecture}, family {self.family}]",
            f"  layers {self.n_layers}, heads {self.n_heads}{gqa}, d_model {self.d_model}, d_head {self.d_head}, "
            f"d_mlp {self.d_mlp}",
            f"  vocab {self.vocab_size}, context {self.n_ctx}, {'causal' if self.causal else 'bidirectional'}, "
            f"{'with' if self.has_head else 'without'} LM head",
            f"  parameters {self.n_params / 1e6:.1f} M, {self.dtype} on {self.device}, attention {self.attention}",
            f"  components (i = 0..{self.n_layers - 1}): " + ", ".join(comps),
        ]
        return "\n".join(lines)


def _cfg(config: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


class LM:
    """A language model to explain: a Hugging Face model, its tokenizer, its canonical names.

    Build one with :func:`interpretlm.load`. The wrapped ``model`` is left as it is: no
    module is replaced; hooks attach to it only inside ``capture`` / ``intervene``.

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> lm = il.load()  # doctest: +SKIP
        >>> lm.score("The capital of France is", il.NextToken(" Paris"))  # doctest: +SKIP
        tensor([-1.6...])
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str = "", source: str = "") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.family: Family = family_of(model)
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.source = source
        cfg = model.config
        self.n_layers: int = len(resolve_blocks(model, self.family))
        self.n_heads: int = int(_cfg(cfg, "num_attention_heads", "n_head"))
        self.n_kv_heads: int = int(_cfg(cfg, "num_key_value_heads", default=self.n_heads))
        self.d_model: int = int(_cfg(cfg, "hidden_size", "n_embd"))
        self.d_head: int = int(_cfg(cfg, "head_dim", default=self.d_model // self.n_heads))
        self.d_mlp: int = int(_cfg(cfg, "intermediate_size", "n_inner", default=4 * self.d_model))
        self.vocab_size: int = int(cfg.vocab_size)
        self.n_ctx: int | None = _cfg(cfg, "max_position_embeddings", "n_positions")
        self.is_causal: bool = self.family.causal and not getattr(cfg, "is_encoder_decoder", False)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.has_head: bool = head is not None
        self._sites: dict[str, Site] = {}
        # the attention-implementation switch: one lock per model, and the active implementations
        # (implementation, config key, returns weights) of nested blocks
        self._attention = AttentionSwitch(model)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __repr__(self) -> str:
        return f"LM({self.name!r}, family={self.family.name!r}, layers={self.n_layers}, heads={self.n_heads})"

    # ------------------------------------------------------------------ components
    def site(self, name: str) -> Site:
        """The module and hook kind behind a canonical component name."""
        if name not in self._sites:
            self._sites[name] = resolve(self.model, self.family, name)
        return self._sites[name]

    def component_names(self) -> list[str]:
        """Every canonical name this model has."""
        return component_names(self.n_layers, self.has_head, self.family.final_norm is not None)

    def indices(self, value: Any, what: str = "layer") -> list[int]:
        """Layer (or head) indices from what a user gives: ``None`` or ``"all"`` (every one), an int,
        or a sequence of ints; negative ints count from the end. Anything else, an index out of
        range or a repeated index raises :class:`ComponentError`.

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm()
            >>> lm.indices(None), lm.indices(-1), lm.indices([0, 1], "head")
            ([0, 1], [1], [0, 1])
        """
        n = self.n_layers if what == "layer" else self.n_heads
        if value is None or (isinstance(value, str) and value == "all"):
            return list(range(n))
        items = [value] if not isinstance(value, (list, tuple, range, torch.Tensor)) else list(value)
        out = []
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, torch.Tensor)) or \
                    (isinstance(v, torch.Tensor) and (v.numel() != 1 or v.is_floating_point())):
                raise ComponentError(f"A {what} index is an int (or 'all'); got {v!r:.40}.")
            i = int(v)
            if not -n <= i < n:
                raise ComponentError(f"{what.capitalize()} {i} is out of range: the model has {n} {what}s "
                                     f"(0..{n - 1}, or -{n}..-1 from the end).")
            out.append(i % n)
        if not out:
            raise ComponentError(f"Ask for at least one {what} (or None / 'all' for every one).")
        if len(set(out)) != len(out):
            raise ComponentError(f"{what.capitalize()}s {out} repeat an index; give each once.")
        return out

    def check_heads(self, layer: int, heads: list[int] | None = None) -> None:
        """Raise a helpful :class:`ComponentError` for a layer or head index out of range."""
        if not 0 <= layer < self.n_layers:
            raise ComponentError(f"Layer {layer} is out of range: the model has {self.n_layers} layers "
                                 f"(0..{self.n_layers - 1}).")
        for h in heads or []:
            if not 0 <= h < self.n_heads:
                raise ComponentError(f"Head {h} is out of range: each layer has {self.n_heads} heads "
                                     f"(0..{self.n_heads - 1}).")

    def info(self) -> ModelInfo:
        """Family, sizes and canonical names of the model."""
        return ModelInfo(
            name=self.name, family=self.family.name, architecture=type(self.model).__name__,
            n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, d_model=self.d_model,
            d_head=self.d_head, d_mlp=self.d_mlp, vocab_size=self.vocab_size, n_ctx=self.n_ctx,
            causal=self.is_causal, has_head=self.has_head,
            n_params=sum(p.numel() for p in self.model.parameters()), dtype=str(self.dtype).replace("torch.", ""),
            device=str(self.device), attention=str(self.model.config._attn_implementation),
            components=self.component_names())

    # ------------------------------------------------------------------ tokens
    def tokenize(self, inputs: Prompts | Batch, *, chat: bool = False, add_special_tokens: bool = True,
                 system_prompt: str | None = None) -> Batch:
        """Tokenize prompts (or take token ids) into a :class:`Batch` with offsets and special marks.

        Args:
            inputs: a prompt, a list of prompts, token ids ``[pos]`` / ``[batch, pos]``.
            chat: format text prompts as a user message through the model's chat template.
            add_special_tokens: follow the tokenizer's BOS/EOS policy (default True).
        """
        if isinstance(inputs, Batch):
            return inputs
        return tokenize(self.tokenizer, inputs, n_ctx=self.n_ctx, chat=chat,
                        add_special_tokens=add_special_tokens, system_prompt=system_prompt,
                        vocab_size=self.vocab_size)

    def to_str_tokens(self, ids: torch.Tensor | list[int]) -> list[str]:
        """Decode each id on its own."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self.tokenizer.decode([i]) for i in ids]

    # ------------------------------------------------------------------ running
    def forward(self, inputs: Prompts | Batch, *, chat: bool = False, grad: bool | None = None,
                inputs_embeds: torch.Tensor | None = None) -> Output:
        """Run the model once.

        Args:
            inputs: prompts, token ids or a :class:`Batch`.
            chat: format through the chat template (see :meth:`tokenize`).
            grad: build the autograd graph (default: whatever the caller's grad mode is).
            inputs_embeds: ``[batch, pos, d_model]`` embeddings to feed instead of the
                token lookup (gradient methods); the batch still gives the mask.

        Returns:
            :class:`Output` with ``logits [batch, pos, vocab]`` and ``hidden [batch, pos, d_model]``.
        """
        batch = self.tokenize(inputs, chat=chat)
        grab: dict[str, torch.Tensor] = {}

        def keep_hidden(value: torch.Tensor) -> None:
            grab["hidden"] = value

        # The last hidden state is the final norm's output (decoders) or the last block's (encoders).
        last = "final_norm" if self.family.final_norm is not None else f"blocks.{self.n_layers - 1}.resid_post"
        ctx = torch.enable_grad() if grad else (torch.no_grad() if grad is False else nullcontext())
        with self.running(), hooks.hook(self, last, read=keep_hidden), ctx:
            out = self.model(**self._model_kwargs(batch, inputs_embeds))
        logits = getattr(out, "logits", None) if self.has_head else None
        return Output(logits=logits, hidden=grab["hidden"], batch=batch)

    def _model_kwargs(self, batch: Batch, inputs_embeds: torch.Tensor | None = None) -> dict[str, Any]:
        """Keyword arguments of a Hugging Face forward call for ``batch`` (no KV cache)."""
        kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask.to(self.device)}
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        else:
            kwargs["input_ids"] = batch.input_ids.to(self.device)
        if self.is_causal:
            kwargs["use_cache"] = False
        return kwargs

    def run(self, inputs: Prompts | Batch, *, until: int | None = None, head: bool = True) -> Batch:
        """Run a forward pass for the sake of the hooks inside it (``capture`` and friends).

        Args:
            inputs: prompts, token ids or a :class:`Batch`.
            until: stop right after block ``until`` (its output hooks still run), so the
                blocks above it cost nothing, as baukit's ``stop``.
            head: run the LM head too; ``False`` runs the base model only, which avoids a
                ``[batch, pos, vocab]`` logits tensor on long prompts.

        Returns:
            the :class:`Batch` that was run.

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("llama")
            >>> with lm.capture(["blocks.0.resid_post"]) as cache:
            ...     _ = lm.run("When Mary and John", until=0, head=False)
            >>> cache["blocks.0.resid_post"].shape[-1] == lm.d_model
            True
        """
        batch = self.tokenize(inputs)
        with ExitStack() as stack:
            if until is not None:
                self.check_heads(until)
                # Registered after any capture hooks on the block, so those read its output first.
                stack.enter_context(hooks.hook(self, f"blocks.{until}.resid_post", stop=True))
            with self.running():
                (self.model if head else self.model.base_model)(**self._model_kwargs(batch))
        return batch

    def score(self, inputs: Prompts | Batch, target: TargetLike, *, chat: bool = False,
              batch_size: int = 32, grad: bool = False) -> torch.Tensor:
        """The target's value for each prompt: ``[batch]``.

        Args:
            inputs: prompts or token ids (a list is scored in chunks of ``batch_size``).
            target: an :class:`~interpretlm.targets.Target`, a single-token string
                (``NextToken``) or a callable ``(logits, batch) -> [batch]``.
            grad: keep the autograd graph.

        A NaN or inf value (an intervention, an overflowing dtype) is returned as it is and
        warned about with :class:`~interpretlm.errors.NonFiniteWarning`, naming the rows.

        Example:
            >>> lm.score("When Mary and John went to the store, John gave a drink to",  # doctest: +SKIP
            ...          il.Contrast(" Mary", " John"))
        """
        tgt = as_target(target, self)
        batch = tgt.prepare(self, self.tokenize(inputs, chat=chat))
        values = []
        for start in range(0, batch.size, batch_size):
            chunk = batch.rows(start, start + batch_size)
            values.append(tgt(self.forward(chunk, grad=grad)))
        out = torch.cat(values)
        bad = ~torch.isfinite(out.detach())
        if bad.any():
            rows = bad.nonzero().flatten().tolist()
            warnings.warn(f"lm.score: the target is non-finite ({out.detach()[rows[0]].item()}) on row(s) "
                          f"{rows[:10]}{' ...' if len(rows) > 10 else ''} of {out.numel()}: the model's output "
                          "holds NaN/inf (an intervention through lm.intervene, or a dtype that overflows).",
                          NonFiniteWarning, stacklevel=2)
        return out

    def top_tokens(self, inputs: Prompts | Batch, k: int = 10, *, chat: bool = False) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely next tokens and their probabilities, per prompt."""
        out = self.forward(inputs, chat=chat, grad=False)
        if out.logits is None:
            raise ComponentError("This model has no LM head, so it predicts no tokens.")
        from .targets import prediction_positions
        pos = prediction_positions(self, out.batch)
        probs = torch.softmax(out.logits[torch.arange(out.batch.size), pos].float(), dim=-1)
        top = probs.topk(k, dim=-1)
        return [[(self.tokenizer.decode([int(i)]), float(p)) for p, i in zip(pv, iv)]
                for pv, iv in zip(top.values, top.indices)]

    # ------------------------------------------------------------------ hooks
    def capture(self, names: list[str] | str, *, grad: bool = False):
        """Context manager recording activations; see :func:`interpretlm.hooks.capture`."""
        return hooks.capture(self, names, grad=grad)

    def intervene(self, edits: dict[str, hooks.Edit]):
        """Context manager editing activations; see :func:`interpretlm.hooks.intervene`."""
        return hooks.intervene(self, edits)

    def hook(self, name: str, *, read: Callable[[torch.Tensor], None] | None = None,
             edit: hooks.Edit | None = None, grad: bool = False, stop: bool = False,
             call: Callable[[tuple, dict], None] | None = None):
        """Context manager reading, editing, taking gradients of or stopping at one component.

        The primitive ``capture``, ``intervene`` and ``run(until=)`` are built on; see
        :func:`interpretlm.hooks.hook`.

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("gpt2")
            >>> with lm.hook("blocks.0.mlp", edit=lambda x: 0 * x):
            ...     zeroed = lm.forward("When Mary and John").logits
        """
        return hooks.hook(self, name, read=read, edit=edit, grad=grad, stop=stop, call=call)

    # ------------------------------------------------------------------ attention implementation
    def attention_implementation(self, implementation: str | Callable[..., Any], *,
                                 returns_weights: bool | None = None):
        """Context manager running attention with ``implementation`` inside the block only; see
        :meth:`interpretlm.attention_switch.AttentionSwitch.use` (re-entrant, safe for concurrent
        callers, Transformers' registries untouched outside the block).

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("llama")
            >>> with lm.attention_implementation("eager"):
            ...     lm.model.config._attn_implementation
            'eager'
        """
        return self._attention.use(implementation, returns_weights=returns_weights)

    def running(self):
        """Context manager marking a forward pass of this thread; see :meth:`AttentionSwitch.running`."""
        return self._attention.running()

    def attention_weights(self):
        """Context manager making attention modules return their probabilities inside the block;
        see :meth:`AttentionSwitch.weights` (keeps LRP's rule when it is active)."""
        return self._attention.weights()

    def eager_attention(self):
        """Context manager running eager attention; the same as ``attention_implementation("eager")``."""
        return self.attention_implementation("eager")

    # ------------------------------------------------------------------ replay
    @property
    def blocks(self) -> nn.ModuleList:
        """The model's blocks (``blocks.{i}``), the original Hugging Face modules."""
        return resolve_blocks(self.model, self.family)

    def module(self, name: str) -> nn.Module:
        """The Hugging Face module behind a canonical name, or a family path.

        ``name`` is a canonical component (``"blocks.3.attn"``: the attention output
        projection) or ``"blocks.{i}.<part>"`` with ``<part>`` one of the family table's
        module fields (``attn_q``, ``mlp_act``, ``norms``...; see
        :meth:`interpretlm.architectures.Family.block_paths`).

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("llama")
            >>> type(lm.module("blocks.0.mlp_out")).__name__
            'Linear'
        """
        from .architectures import get_module
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] in self.family.block_paths():
            self.check_heads(int(parts[1]))
            paths = self.family.block_paths()[parts[2]]
            if not isinstance(paths, str):
                raise ComponentError(f"{parts[2]!r} names several modules; use lm.modules({name!r}).")
            return get_module(self.blocks[int(parts[1])], paths)
        return self.site(name).module

    def modules(self, name: str) -> list[nn.Module]:
        """Every module a family path of one block names (``"blocks.0.norms"``), in table order."""
        from .architectures import get_module
        parts = name.split(".")
        if not (len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit()
                and parts[2] in self.family.block_paths()):
            return [self.module(name)]
        self.check_heads(int(parts[1]))
        paths = self.family.block_paths()[parts[2]]
        paths = (paths,) if isinstance(paths, str) else paths
        return [get_module(self.blocks[int(parts[1])], p) for p in paths]

    def record(self, inputs: Prompts | Batch):
        """Run one forward pass and record what replaying its blocks needs.

        Returns:
            a :class:`~interpretlm.replay.Recording` with ``resid`` (the residual stream
            entering each block, then the last block's output, ``[batch, pos, d_model]``),
            the blocks' call arguments, the forward pass's :class:`Output`; its
            ``replay(start, hidden, rows)`` runs blocks ``start..`` again on any residual stream.

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("llama")
            >>> rec = lm.record("When Mary and John")
            >>> torch.allclose(rec.replay(0, rec.resid[0]), rec.resid[-1], atol=1e-5)
            True
        """
        from .replay import record
        return record(self, self.tokenize(inputs))

    def head_module(self) -> nn.Module | None:
        """The part of the model after the base model that turns hidden states into logits.

        ``lm_head`` for causal LMs, ``cls`` (transform + decoder) for BERT masked LMs;
        ``None`` without a head.
        """
        from .replay import head_module
        return head_module(self)

    def final_norm_module(self) -> nn.Module | None:
        """The final norm (``final_norm``), or ``None`` for families without one (encoders)."""
        return self.site("final_norm").module if self.family.final_norm is not None else None

    def final_hidden(self, resid: torch.Tensor) -> torch.Tensor:
        """The base model's last hidden state from the last block's output: the final norm applied.

        ``resid [..., d_model] -> [..., d_model]`` (unchanged without a final norm).
        """
        norm = self.final_norm_module()
        return norm(resid) if norm is not None else resid

    def logits_at(self, resid: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[batch, pos, vocab]`` from the last block's output ``resid [batch, pos, d_model]``.

        With ``positions [batch, k]`` only those positions go through the final norm and the
        head; the others hold zeros (cheap when the vocabulary is large).
        """
        from .replay import logits_at
        return logits_at(self, resid, positions)

    def head_writes(self, layer: int, heads: torch.Tensor) -> torch.Tensor:
        """What each attention head writes to the residual stream, through the output projection.

        Args:
            layer: the block.
            heads: ``[batch, pos, head, d_head]`` per-head values (``blocks.{layer}.attn.heads``
                or a difference of two).

        Returns:
            ``[head, batch, pos, d_model]``: head ``h``'s share of the projection, bias removed.
        """
        from .replay import head_writes
        return head_writes(self, layer, heads)


    # ------------------------------------------------------------------ identity
    @property
    def fingerprint(self) -> str:
        """A short hash of the weights (names, shapes, dtypes and per-tensor sums), recorded in results.

        Recomputed only when a parameter was modified in place (PyTorch's version counters),
        so reading it costs nothing between edits.

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("llama")
            >>> len(lm.fingerprint), lm.fingerprint == tiny_lm("llama").fingerprint
            (16, True)
        """
        import hashlib

        params = list(self.model.state_dict(keep_vars=True).items())
        versions = tuple(p._version for _, p in params)
        cached = getattr(self, "_fingerprint_cache", None)
        if cached is not None and cached[0] == versions:
            return cached[1]
        h = hashlib.sha256()
        offloaded = _offloaded_weights(self.model) if any(p.device.type == "meta" for _, p in params) else {}
        with torch.no_grad():
            for name, p in params:
                t = offloaded.get(name, p).detach()
                h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
                if t.is_floating_point() and t.numel():
                    flat = t.reshape(-1).double()
                    h.update(torch.stack([flat.sum(), (flat * flat).sum(), flat[:: max(1, flat.numel() // 64)].sum()])
                             .cpu().numpy().round(6).tobytes())
        digest = h.hexdigest()[:16]
        self._fingerprint_cache = (versions, digest)
        return digest


def _offloaded_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The real values of weights a device map offloaded (to CPU RAM or disk): accelerate leaves
    them on the ``meta`` device and keeps them in each module's hook (``weights_map``)."""
    found: dict[str, torch.Tensor] = {}
    for mod_name, module in model.named_modules():
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
            weights = getattr(h, "weights_map", None)
            if weights is None:
                continue
            for local, value in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                if value.device.type == "meta":
                    try:
                        found[f"{mod_name}.{local}" if mod_name else local] = weights[local]
                    except KeyError:
                        continue
    return found


def resolve_blocks(model: nn.Module, family: Family) -> nn.ModuleList:
    from .architectures import get_module
    return get_module(model.base_model, family.blocks)
