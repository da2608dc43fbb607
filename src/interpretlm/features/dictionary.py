"""Sparse dictionaries (SAEs and transcoders): load, save, encode, decode, splice, steer, ablate.

A :class:`Dictionary` reads one canonical component (``blocks.5.resid_post``, ``blocks.3.mlp``,
``blocks.2.mlp.neurons``, ``blocks.1.attn.heads`` flattened to ``[.., head * d_head]``) and
writes a reconstruction of it (a sparse autoencoder), or reads the MLP's input
(``blocks.{i}.mlp.input``) and writes the MLP's output (``blocks.{i}.mlp``) (a transcoder).

``f = relu(W_enc^T (x - b_dec·[subtract_b_dec]) + b_enc)`` with a TopK (keep the ``k`` largest),
a JumpReLU (keep those above ``threshold``) or a plain ReLU, then ``x̂ = f W_dec + b_dec``.

Two formats on disk:

* **SAELens** (``cfg.json`` + ``sae_weights.safetensors``: ``W_enc [d_in, d_sae]``, ``b_enc``,
  ``W_dec [d_sae, d_in]``, ``b_dec``, ``threshold`` for JumpReLU); the hook name in TransformerLens
  spelling (``blocks.8.hook_resid_pre``) is mapped to the canonical one. This is the format
  :meth:`Dictionary.save` writes.
* **EleutherAI sparsify** (``cfg.json`` + ``sae.safetensors``: ``encoder.weight [n, d_in]``,
  ``encoder.bias``, ``W_dec [n, d_in]``, ``b_dec``; TopK; ``transcode`` for transcoders); the
  hookpoint is the folder's name (``layers.6`` is ``blocks.6.resid_post``, ``layers.6.mlp`` the MLP).

**Splicing** keeps the model's output: inside ``lm.intervene({component: sae.steer({i: s})})``
the component's value becomes ``decode(f') + (x - decode(f))``: the edited reconstruction plus
the reconstruction error, so with no edit the output is the model's own (to float rounding).

Example:
    >>> import torch
    >>> from interpretlm.testing import tiny_lm
    >>> from interpretlm.features import Dictionary
    >>> lm = tiny_lm("llama")
    >>> sae = Dictionary.random(lm.d_model, 32, component="blocks.0.resid_post", k=4, seed=0)
    >>> sae.encode(torch.randn(3, lm.d_model)).count_nonzero(-1).tolist()
    [4, 4, 4]
    >>> a = lm.forward("a b c").logits
    >>> with lm.intervene({"blocks.0.resid_post": sae.steer({})}):
    ...     b = lm.forward("a b c").logits
    >>> bool(torch.allclose(a, b, atol=1e-5))
    True
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import ComponentError
from ..results import Check, atomic_write
from .errors import DictionaryFormatError, DictionaryMismatchError, FeatureError, FeatureIndexError

ACTIVATIONS = ("topk", "jumprelu", "relu")
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
# TransformerLens hook names (SAELens' hook_name) -> canonical components
_TL = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "hook_attn_out": "attn",
       "hook_mlp_out": "mlp", "mlp.hook_post": "mlp.neurons", "attn.hook_z": "attn.heads",
       "ln2.hook_normalized": "mlp.input", "hook_mlp_in": "mlp.input"}


def canonical_component(name: str) -> str:
    """The canonical name of a hook name in TransformerLens (SAELens) or sparsify spelling.

    Example:
        >>> canonical_component("blocks.8.hook_resid_pre"), canonical_component("layers.6.mlp")
        ('blocks.8.resid_pre', 'blocks.6.mlp')
    """
    m = _BLOCK.match(name)
    if m and m.group(2) in _TL:
        return f"blocks.{m.group(1)}.{_TL[m.group(2)]}"
    m = re.match(r"^(?:model\.)?(?:layers|h|gpt_neox\.layers)\.(\d+)(\.mlp)?$", name)
    if m:
        return f"blocks.{m.group(1)}.{'mlp' if m.group(2) else 'resid_post'}"
    return name


def component_width(lm: Any, component: str) -> int:
    """How many numbers per token ``component`` holds (``attn.heads`` flattened; ``mlp.input``: d_model).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> component_width(lm, "blocks.0.mlp.neurons") == lm.d_mlp
        True
    """
    m = _BLOCK.match(component)
    kind = m.group(2) if m else component
    if kind == "mlp.input":
        if int(m.group(1)) >= lm.n_layers:
            raise ComponentError(f"Layer {m.group(1)} of {component!r} is out of range: the model has "
                                 f"{lm.n_layers} blocks.")
        return lm.d_model
    if component not in lm.component_names():
        raise ComponentError(f"Unknown component {component!r}; see lm.component_names().")
    if kind == "mlp.neurons":
        return lm.d_mlp
    if kind == "attn.heads":
        return lm.n_heads * lm.d_head
    if kind in ("attn.pattern", "unembed"):
        raise DictionaryMismatchError(f"{component!r} is not one vector per token; a dictionary reads resid_pre, "
                                      "resid_post, attn, mlp, mlp.neurons or attn.heads.")
    return lm.d_model


@contextmanager
def read_mlp_input(lm: Any, layer: int, keep: Callable[[torch.Tensor], None]) -> Iterator[None]:
    """Call ``keep(x)`` with the MLP's input ``[batch, pos, d_model]`` of block ``layer`` at each forward pass.

    The MLP's input (after the block's pre-MLP norm) is not a canonical component: it is read by a
    pre-hook on the MLP's first input projection (as the activation-maximization family reads gate
    and up), removed on exit.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> seen = []
        >>> with read_mlp_input(lm, 0, seen.append):
        ...     _ = lm.forward("a b")
        >>> seen[0].shape[-1] == lm.d_model
        True
    """
    module = lm.modules(f"blocks.{layer}.mlp_in")[0]

    def pre(mod: Any, args: tuple) -> None:
        keep(args[0])
    handle = module.register_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()


class Dictionary:
    """A sparse dictionary over one component: a TopK / JumpReLU / ReLU SAE, or a transcoder.

    Attributes:
        W_enc: ``[d_in, n_features]``; b_enc: ``[n_features]``.
        W_dec: ``[n_features, d_out]`` (rows are the features' directions); b_dec: ``[d_out]``.
        activation: ``"topk"`` (``k`` largest kept), ``"jumprelu"`` (``threshold [n_features]``) or ``"relu"``.
        component: the canonical component read (a transcoder's is ``blocks.{i}.mlp.input``).
        output: the component written: ``component`` for an SAE, ``blocks.{i}.mlp`` for a transcoder.
        subtract_b_dec: the encoder reads ``x - b_dec`` (SAELens' ``apply_b_dec_to_input``, sparsify's SAEs).
        name: a short label (``"topk-512"``); path: the folder it was loaded from or saved to.
        metrics: fraction of variance unexplained (``fvu``), ``l0``, ``dead_fraction``,
            ``ce_loss_recovered`` and what they were measured on (filled by training or :func:`evaluate`).
    """

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor, *,
                 component: str, activation: str = "topk", k: int | None = None,
                 threshold: torch.Tensor | None = None, output: str | None = None, subtract_b_dec: bool = True,
                 name: str = "", path: str | None = None, metrics: dict[str, Any] | None = None,
                 source: str = "interpretlm") -> None:
        if activation not in ACTIVATIONS:
            raise DictionaryFormatError(f"Unknown dictionary activation {activation!r}; supported: {ACTIVATIONS}.")
        W_enc, W_dec = torch.as_tensor(W_enc).float(), torch.as_tensor(W_dec).float()
        if W_enc.ndim != 2 or W_dec.ndim != 2 or W_enc.shape[1] != W_dec.shape[0]:
            raise DictionaryFormatError(f"W_enc must be [d_in, n] and W_dec [n, d_out] with the same n; got "
                                        f"{tuple(W_enc.shape)} and {tuple(W_dec.shape)}.")
        n = W_enc.shape[1]
        b_enc, b_dec = torch.as_tensor(b_enc).float().flatten(), torch.as_tensor(b_dec).float().flatten()
        if b_enc.numel() != n or b_dec.numel() != W_dec.shape[1]:
            raise DictionaryFormatError(f"b_enc must have {n} entries and b_dec {W_dec.shape[1]}; got "
                                        f"{b_enc.numel()} and {b_dec.numel()}.")
        if activation == "topk" and (not isinstance(k, int) or not 0 < k <= n):
            raise DictionaryFormatError(f"A TopK dictionary needs k in 1..{n}; got {k!r}.")
        if activation == "jumprelu":
            if threshold is None:
                raise DictionaryFormatError("A JumpReLU dictionary needs its threshold [n_features].")
            threshold = torch.as_tensor(threshold).float().flatten()
            if threshold.numel() != n:
                raise DictionaryFormatError(f"threshold must have {n} entries; got {threshold.numel()}.")
        self.W_enc, self.b_enc, self.W_dec, self.b_dec = W_enc, b_enc, W_dec, b_dec
        self.activation, self.k, self.threshold = activation, k, threshold
        self.component = component
        self.output = output or component
        self.subtract_b_dec = bool(subtract_b_dec)
        self.name = name or (f"{activation}-{n}" + ("-transcoder" if self.is_transcoder else ""))
        self.path = None if path is None else str(path)
        self.metrics: dict[str, Any] = dict(metrics or {})
        self.source = source

    # ------------------------------------------------------------------ facts
    @property
    def n_features(self) -> int:
        return self.W_enc.shape[1]

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[1]

    @property
    def is_transcoder(self) -> bool:
        return self.output != self.component

    @property
    def layer(self) -> int:
        m = _BLOCK.match(self.component)
        return int(m.group(1)) if m else -1

    @property
    def check(self) -> Check:
        """The figure that says whether the dictionary can be trusted: its fraction of variance
        unexplained (at most 0.3), measured on held-out tokens (``None`` until measured)."""
        return Check("fraction_variance_unexplained", self.metrics.get("fvu"), 0.3)

    def __repr__(self) -> str:
        kind = "transcoder" if self.is_transcoder else "SAE"
        k = f", k={self.k}" if self.activation == "topk" else ""
        where = f"{self.component} -> {self.output}" if self.is_transcoder else self.component
        return f"Dictionary({kind} {self.activation}{k}, {self.n_features} features, {where})"

    # ------------------------------------------------------------------ maths
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in] -> [..., n_features]`` the encoder's pre-activations (float32)."""
        x = x.float()
        if x.shape[-1] != self.d_in:
            raise DictionaryMismatchError(f"{self.name} reads vectors of {self.d_in} numbers; got "
                                          f"{x.shape[-1]} (a dictionary of another component or model?).")
        W = self.W_enc.to(x.device)
        if self.subtract_b_dec:
            x = x - self.b_dec.to(x.device)
        return x @ W + self.b_enc.to(x.device)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The sparse activations ``[..., n_features]`` from pre-activations."""
        if self.activation == "topk":
            top = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, top.indices, top.values.relu())
        if self.activation == "jumprelu":
            return pre.relu() * (pre > self.threshold.to(pre.device))
        return pre.relu()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., d_in] -> [..., n_features]`` the features' activations (float32, sparse by construction).

        Example:
            >>> sae = Dictionary.random(8, 16, component="blocks.0.resid_post", k=2, seed=0)
            >>> sae.encode(torch.randn(5, 8)).count_nonzero(-1).tolist()
            [2, 2, 2, 2, 2]
        """
        return self.activate(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """``[..., n_features] -> [..., d_out]`` the reconstruction ``f W_dec + b_dec``."""
        return f.float() @ self.W_dec.to(f.device) + self.b_dec.to(f.device)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``: ``[..., d_in] -> [..., d_out]``."""
        return self.decode(self.encode(x))

    def direction(self, i: int) -> torch.Tensor:
        """``[d_out]`` feature ``i``'s decoder row (what one unit of it writes)."""
        return self.W_dec[self.feature_index(i)]

    def feature_index(self, i: Any) -> int:
        """``i`` checked against the dictionary (a clear error out of range)."""
        if isinstance(i, bool) or not isinstance(i, int):
            if isinstance(i, torch.Tensor) and i.numel() == 1 and not i.is_floating_point():
                i = int(i)
            else:
                raise FeatureIndexError(f"A feature index is an int; got {i!r}.")
        if not 0 <= i < self.n_features:
            raise FeatureIndexError(f"Feature {i} is out of range: {self.name} has {self.n_features} features "
                                    f"(0..{self.n_features - 1}).")
        return i

    # ------------------------------------------------------------------ models
    def check_model(self, lm: Any) -> None:
        """Raise :class:`DictionaryMismatchError` unless the dictionary's components exist in ``lm``
        with its widths (``d_in`` read, ``d_out`` written)."""
        for comp, width, what in ((self.component, self.d_in, "reads"), (self.output, self.d_out, "writes")):
            try:
                have = component_width(lm, comp)
            except ComponentError as exc:
                raise DictionaryMismatchError(f"{self.name} {what} {comp!r}, which {lm.name or 'this model'} does "
                                              f"not have: {exc}") from None
            if have != width:
                raise DictionaryMismatchError(
                    f"{self.name} {what} {width} numbers per token at {comp!r}, but {lm.name or 'this model'} has "
                    f"{have} there: the dictionary was trained on another model or component.")

    def _edit(self, change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """An edit for ``lm.intervene`` at the SAE's component: ``decode(change(f)) + (x - decode(f))``."""
        if self.is_transcoder:
            raise FeatureError(f"{self.name} is a transcoder: its features are read at the MLP's input and written "
                               f"at {self.output!r}; use `with tc.intervene(lm, steer=..., ablate=...)` instead.")

        def edit(value: torch.Tensor) -> torch.Tensor:
            shape = value.shape
            x = value.reshape(*shape[:2], -1) if value.ndim == 4 else value    # attn.heads: [b, pos, H*dh]
            f = self.encode(x)
            error = x.float() - self.decode(f)
            out = self.decode(change(f)) + error
            return out.to(value.dtype).reshape(shape)
        return edit

    def splice(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The edit that routes the component through the dictionary, error added back (the output unchanged)."""
        return self._edit(lambda f: f)

    def steer(self, strengths: Mapping[int, float], mode: str = "add") -> Callable[[torch.Tensor], torch.Tensor]:
        """An edit for ``lm.intervene({sae.component: ...})`` that moves features: ``{i: s}`` adds ``s``
        to feature ``i``'s activation at every token (``mode="add"``) or sets it to ``s`` (``"clamp"``).

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("llama")
            >>> sae = Dictionary.random(lm.d_model, 32, component="blocks.1.resid_post", k=4, seed=0)
            >>> with lm.intervene({sae.component: sae.steer({3: 8.0})}):
            ...     steered = lm.forward("a b").logits
            >>> bool((steered - lm.forward("a b").logits).abs().max() > 1e-3)
            True
        """
        idx, vals = self._strengths(strengths)
        if mode not in ("add", "clamp"):
            raise FeatureError(f"mode is 'add' or 'clamp'; got {mode!r}.")

        def change(f: torch.Tensor) -> torch.Tensor:
            f = f.clone()
            if len(idx):
                v = vals.to(f.device)
                f[..., idx] = f[..., idx] + v if mode == "add" else v.expand_as(f[..., idx]).clone()
            return f
        return self._edit(change)

    def ablate(self, features: Iterable[int]) -> Callable[[torch.Tensor], torch.Tensor]:
        """An edit that sets features to zero (their contribution removed, the error term kept)."""
        idx = torch.tensor([self.feature_index(i) for i in features], dtype=torch.long)

        def change(f: torch.Tensor) -> torch.Tensor:
            f = f.clone()
            f[..., idx] = 0.0
            return f
        return self._edit(change)

    def patch(self, features: Iterable[int], source: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """An edit that sets features to their activations in another run (activation patching of features).

        ``source``: ``[batch, pos, n_features]`` (or ``[pos, n_features]``, broadcast over the batch) the
        features' activations there (``sae.encode`` of a captured component); the error term of the
        patched run is kept.

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("llama")
            >>> sae = Dictionary.random(lm.d_model, 32, component="blocks.1.resid_post", k=4)
            >>> with lm.capture([sae.component]) as c:
            ...     _ = lm.forward("a b c")
            >>> with lm.intervene({sae.component: sae.patch(range(32), sae.encode(c[sae.component]))}):
            ...     same = lm.forward("a b c").logits
            >>> bool(torch.allclose(same, lm.forward("a b c").logits, atol=1e-5))
            True
        """
        idx = torch.tensor([self.feature_index(i) for i in features], dtype=torch.long)
        src = torch.as_tensor(source).float()
        if src.shape[-1] != self.n_features:
            raise FeatureError(f"source must end in n_features={self.n_features}; got shape {tuple(src.shape)}.")

        def change(f: torch.Tensor) -> torch.Tensor:
            if src.shape[-2] != f.shape[-2]:
                raise FeatureError(f"The patched run has {src.shape[-2]} positions; this one has {f.shape[-2]}.")
            f = f.clone()
            f[..., idx] = src.to(f.device)[..., idx].expand_as(f[..., idx])
            return f
        return self._edit(change)

    def _strengths(self, strengths: Mapping[int, float]) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(strengths, Mapping):
            raise FeatureError(f"Steering takes {{feature: strength}}; got {type(strengths).__name__}.")
        idx = torch.tensor([self.feature_index(i) for i in strengths], dtype=torch.long)
        vals = torch.tensor([float(v) for v in strengths.values()], dtype=torch.float32)
        if not torch.isfinite(vals).all():
            raise FeatureError("Steering strengths must be finite numbers.")
        return idx, vals

    @contextmanager
    def intervene(self, lm: Any, steer: Mapping[int, float] | None = None, ablate: Iterable[int] = (),
                  replace: bool = False) -> Iterator[None]:
        """Edit features during forward passes of ``lm`` (SAEs and transcoders alike).

        ``steer`` adds strengths to features, ``ablate`` zeroes them; ``replace=True`` drops the error
        term (the model then runs on the dictionary's reconstruction: what cross-entropy recovered
        measures). A transcoder reads the MLP's input and edits the MLP's output.

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("llama")
            >>> tc = Dictionary.random(lm.d_model, 32, component="blocks.0.mlp.input", output="blocks.0.mlp", k=4)
            >>> with tc.intervene(lm):
            ...     same = lm.forward("a b").logits
            >>> bool(torch.allclose(same, lm.forward("a b").logits, atol=1e-5))
            True
        """
        self.check_model(lm)
        idx, vals = self._strengths(steer or {})
        off = torch.tensor([self.feature_index(i) for i in ablate], dtype=torch.long)

        def change(f: torch.Tensor) -> torch.Tensor:
            f = f.clone()
            if len(idx):
                f[..., idx] = f[..., idx] + vals.to(f.device)
            if len(off):
                f[..., off] = 0.0
            return f

        if not self.is_transcoder:
            edit = self._edit(change)
            if replace:
                def edit(value: torch.Tensor) -> torch.Tensor:   # noqa: F811  (no error term)
                    shape = value.shape
                    x = value.reshape(*shape[:2], -1) if value.ndim == 4 else value
                    return self.decode(change(self.encode(x))).to(value.dtype).reshape(shape)
            with lm.intervene({self.component: edit}):
                yield
            return
        seen: list[torch.Tensor] = []

        def out_edit(value: torch.Tensor) -> torch.Tensor:
            f = self.encode(seen.pop())
            new = self.decode(change(f))
            if not replace:
                new = new + (value.float() - self.decode(f))
            return new.to(value.dtype)
        with ExitStack() as stack:
            stack.enter_context(read_mlp_input(lm, self.layer, seen.append))
            stack.enter_context(lm.intervene({self.output: out_edit}))
            yield

    # ------------------------------------------------------------------ building
    @classmethod
    def random(cls, d_in: int, n_features: int, *, component: str, k: int | None = 32, output: str | None = None,
               d_out: int | None = None, activation: str = "topk", seed: int = 0) -> "Dictionary":
        """A randomly initialised dictionary (the training's starting point: unit decoder rows, encoder = decoder^T).

        Example:
            >>> Dictionary.random(8, 16, component="blocks.0.resid_post", k=2).W_dec.norm(dim=1).round(decimals=4).unique().tolist()
            [1.0]
        """
        g = torch.Generator().manual_seed(seed)
        d_out = d_out or d_in
        W_dec = torch.randn(n_features, d_out, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        W_enc = W_dec.T.clone() if d_out == d_in else torch.randn(d_in, n_features, generator=g) / d_in ** 0.5
        return cls(W_enc, torch.zeros(n_features), W_dec, torch.zeros(d_out), component=component,
                   activation=activation, k=k if activation == "topk" else None,
                   threshold=torch.zeros(n_features) if activation == "jumprelu" else None, output=output,
                   subtract_b_dec=output is None or output == component)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights by their SAELens names."""
        out = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out

    def config(self) -> dict[str, Any]:
        """The SAELens ``cfg.json`` of the dictionary (plus interpretlm's own keys)."""
        arch = {"topk": "topk", "jumprelu": "jumprelu", "relu": "standard"}[self.activation]
        cfg: dict[str, Any] = {
            "architecture": ("transcoder" if arch == "standard" else f"{arch}_transcoder") if self.is_transcoder
            else arch, "d_in": self.d_in, "d_sae": self.n_features, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": self.subtract_b_dec, "normalize_activations": "none",
            "hook_name": self.component, "metadata": {"hook_name": self.component},
            "interpretlm": {"name": self.name, "component": self.component, "output": self.output,
                            "activation": self.activation, "metrics": self.metrics}}
        if self.activation == "topk":
            cfg["k"] = self.k
            cfg["activation_fn_str"] = "topk"
            cfg["activation_fn_kwargs"] = {"k": self.k}
        if self.is_transcoder:
            cfg["d_out"] = self.d_out
            cfg["hook_name_out"] = self.output
        return cfg

    def save(self, path: str | Path) -> Path:
        """Write the dictionary in SAELens format (``cfg.json`` + ``sae_weights.safetensors``), atomically.

        Example:
            >>> import tempfile
            >>> sae = Dictionary.random(8, 16, component="blocks.0.resid_post", k=2)
            >>> folder = sae.save(tempfile.mkdtemp())
            >>> from interpretlm.features import load
            >>> bool(torch.equal(load(folder).W_dec, sae.W_dec))
            True
        """
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / SAELENS_WEIGHTS,
                     lambda tmp: save_file({k: v.contiguous() for k, v in self.tensors().items()}, tmp))
        atomic_write(folder / "cfg.json", lambda tmp: Path(tmp).write_text(json.dumps(self.config(), indent=1)))
        self.path = str(folder)
        return folder

    # ------------------------------------------------------------------ plain data (units in results)
    def to_dict(self) -> dict[str, Any]:
        """The dictionary as plain data: its folder. A dictionary that has none (trained or built in memory)
        is saved once under ``il.cache_dir() / "dictionaries" / <hash of its weights>`` (results hold many
        units of one dictionary; weights inline would be copied into every one)."""
        if self.path is None or not (Path(self.path) / "cfg.json").exists():
            import hashlib

            from ..loading import cache_dir

            h = hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode())
            for v in self.tensors().values():
                h.update(v.contiguous().numpy().tobytes())
            self.save(cache_dir() / "dictionaries" / h.hexdigest()[:24])
        return {"path": self.path, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Dictionary":
        from .formats import load

        return load(d["path"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dictionary):
            return NotImplemented
        return self is other or (self.component == other.component and self.output == other.output
                                 and self.activation == other.activation and self.k == other.k
                                 and self.W_dec.shape == other.W_dec.shape and torch.equal(self.W_dec, other.W_dec)
                                 and torch.equal(self.W_enc, other.W_enc) and torch.equal(self.b_enc, other.b_enc))

    def __hash__(self) -> int:
        return hash((self.component, self.output, self.n_features, self.d_in))


__all__ = ["ACTIVATIONS", "Dictionary", "canonical_component", "component_width", "read_mlp_input"]
