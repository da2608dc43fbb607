"""The replacement model of an attribution graph: norms, activations outside the MLPs and attention
patterns frozen at their values on the prompt, so what is left is affine in its leaves.

:class:`Frozen` hooks every norm of the model (the blocks' norms, BERT's embedding norm, the final norm,
masked-LM heads' norms) and the activations of masked-LM heads, and runs attention through a custom
function of the core's attention switch. On the first pass (``record``) each hook computes its factor
from the value it sees and keeps it; on later passes (``replay``) it reuses the kept factors in call
order, so a pass with every leaf at zero gives each target's constant term (biases, position
embeddings, a transcoder's ``b_dec``). The frozen forms are anchored to the module's own output:

* an RMS norm, an activation: ``y = x · r + c`` with ``r = y / x`` (0 where ``x`` is 0), ``c = y - x · r``;
* a layer norm: ``y = (x - mean x) · r + c`` with ``r = weight / sqrt(var x + eps)``, ``c = y - (x - mean x) · r``
  (the bias, to float rounding);
* attention: ``probabilities @ V`` with the probabilities of the recording pass (soft-capping and the mask
  applied as the model does), constants of the graph.

On the prompt's own values every frozen form returns the module's output (the clean pass is unchanged).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from ..architectures import find_module, get_module
from ..attention_switch import attention_inputs
from .dictionary import Dictionary
from .errors import DictionaryFormatError, FeatureError


class Frozen:
    """Norm factors and attention probabilities of one prompt, recorded once and replayed.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("gpt2")
        >>> frozen = Frozen(lm)
        >>> a = lm.forward("a b c").logits
        >>> with frozen.active(replay=False):
        ...     b = lm.forward("a b c").logits
        >>> bool(torch.allclose(a, b, atol=1e-5))
        True
    """

    def __init__(self, lm: Any) -> None:
        fam = lm.family
        if fam.norm not in ("rms", "layer"):
            raise FeatureError(f"The {fam.name!r} family table does not say which norm its models use (Family.norm "
                               "'rms' or 'layer'), so its norms cannot be frozen for an attribution graph.")
        self.lm = lm
        base = lm.model.base_model
        norms: list[Any] = []
        if fam.embed_norm is not None:
            norms.append(get_module(base, fam.embed_norm))
        for l in range(lm.n_layers):
            norms += lm.modules(f"blocks.{l}.norms") if fam.norms else []
        if lm.final_norm_module() is not None:
            norms.append(lm.final_norm_module())
        acts: list[Any] = []
        if lm.has_head:
            norms += [m for p in fam.head_norms if (m := find_module(lm.model, p)) is not None]
            acts += [m for p in fam.head_acts if (m := find_module(lm.model, p)) is not None]
        self.norms, self.acts = norms, acts
        self.centered = fam.norm == "layer"
        self.store: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.probs: dict[int, list[torch.Tensor]] = {}
        self.cursor: dict[int, int] = {}
        self.replay = False

    def _take(self, key: int, table: dict[int, list[Any]]) -> Any:
        i = self.cursor.get(key, 0)
        self.cursor[key] = i + 1
        try:
            return table[key][i]
        except (KeyError, IndexError):
            raise FeatureError("The replayed pass called a module more often than the recorded one; the prompt "
                               "must be the same in every pass of an attribution graph.") from None

    def _hook(self, centered: bool, layer_norm: bool):
        def hook(module: Any, args: tuple, kwargs: dict, out: Any) -> Any:
            x = (args[0] if args else next(iter(kwargs.values()))).float()
            xc = x - x.mean(-1, keepdim=True) if centered else x
            if self.replay:
                r, c = self._take(id(module), self.store)
            else:
                y = out.detach().float()
                if layer_norm:
                    w = getattr(module, "weight", None)
                    eps = getattr(module, "eps", getattr(module, "variance_epsilon", 1e-5))
                    r = torch.rsqrt(xc.detach().pow(2).mean(-1, keepdim=True) + eps)
                    r = r * w.detach().float() if w is not None else r.expand_as(xc)
                else:
                    xd = xc.detach()
                    r = torch.where(xd != 0, y / torch.where(xd != 0, xd, 1.0), 0.0)
                c = y - xc.detach() * r
                self.store.setdefault(id(module), []).append((r, c))
            return (xc * r + c).to(out.dtype)
        return hook

    def attention(self, module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                  **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention with the recorded probabilities (constants: linear in the values)."""
        if kwargs.get("s_aux") is not None:
            raise FeatureError("Attribution graphs do not cover attention sinks (s_aux).")
        k, v, mask = attention_inputs(query, key, value, attention_mask)
        if self.replay:
            probs = self._take(id(module), self.probs)
        else:
            if mask is None and getattr(module, "is_causal", False):
                q_len, k_len = query.shape[-2], k.shape[-2]
                mask = torch.full((q_len, k_len), float("-inf"), device=query.device).triu(k_len - q_len + 1)[None, None]
            scale = float(scaling if scaling is not None else query.shape[-1] ** -0.5)
            scores = (query.detach().float() @ k.detach().float().transpose(-1, -2)) * scale
            cap = kwargs.get("softcap")
            if cap is not None:
                scores = torch.tanh(scores / cap) * cap
            if mask is not None:
                scores = scores + mask.float()
            probs = torch.softmax(scores, dim=-1)
            self.probs.setdefault(id(module), []).append(probs)
        out = probs.to(value.dtype) @ v
        return out.transpose(1, 2).contiguous(), probs

    @contextmanager
    def active(self, replay: bool) -> Iterator[None]:
        """Run the model frozen: recording the factors (``replay=False``) or reusing them."""
        self.replay = replay
        self.cursor = {}
        handles = [m.register_forward_hook(self._hook(self.centered, self.centered), with_kwargs=True)
                   for m in self.norms]
        handles += [m.register_forward_hook(self._hook(False, False), with_kwargs=True) for m in self.acts]
        try:
            with self.lm.attention_implementation(self.attention):
                yield
        finally:
            for h in handles:
                h.remove()


def load_transcoders(spec: Any) -> dict[int, Dictionary]:
    """Per-layer transcoders from what the method, the command line and the app take: ``{layer: tc}``, a
    list of transcoders (or of their folders, or of their plain-data dicts), or one folder whose
    sub-folders each hold one (SAELens or sparsify format: ``tc.save(folder / "layer_3")``; sparsify's
    ``layers.3.mlp``). Layers are read from each transcoder's component.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for l in range(2):
        ...     _ = Dictionary.random(8, 16, component=f"blocks.{l}.mlp.input", output=f"blocks.{l}.mlp",
        ...                           k=2).save(root / f"layer_{l}")
        >>> sorted(load_transcoders(str(root)))
        [0, 1]
    """
    from .formats import load

    def one(x: Any) -> Dictionary:
        if isinstance(x, Dictionary):
            return x
        if isinstance(x, dict) and "path" in x:
            return load(x["path"])
        if isinstance(x, (str, Path)):
            return load(x)
        raise DictionaryFormatError(f"A transcoder is a Dictionary, its folder or its plain data; got {x!r:.80}.")

    if isinstance(spec, (str, Path)):
        folder = Path(spec)
        if (folder / "cfg.json").exists():
            items = [one(folder)]
        elif folder.is_dir():
            subs = sorted((p for p in folder.iterdir() if (p / "cfg.json").exists()), key=lambda p: p.name)
            if not subs:
                raise DictionaryFormatError(f"{folder} holds no transcoder: give a folder with one sub-folder per "
                                            "layer, each a dictionary (cfg.json + weights).")
            items = [one(p) for p in subs]
        else:
            raise DictionaryFormatError(f"{folder} is not a folder of transcoders.")
    elif isinstance(spec, dict) and all(isinstance(k, (int, str)) and str(k).isdigit() for k in spec):
        items = [one(v) for _, v in sorted(spec.items(), key=lambda kv: int(kv[0]))]
        for k, tc in zip(sorted(spec, key=int), items):
            if tc.layer != int(k):
                raise FeatureError(f"transcoders[{k}] must be a transcoder of block {k}'s MLP; got {tc!r}.")
    elif isinstance(spec, (list, tuple)):
        items = [one(x) for x in spec]
        layers = [tc.layer for tc in items]
        if layers != sorted(set(layers)):
            raise FeatureError(f"A list of transcoders is in layer order, one per layer; got the transcoders of blocks "
                               f"{layers}.")
    else:
        raise FeatureError(f"transcoders: a list of per-layer transcoders, {{layer: transcoder}} or a folder of them; "
                           f"got {type(spec).__name__}.")
    out: dict[int, Dictionary] = {}
    for tc in items:
        if not tc.is_transcoder or not tc.component.endswith(".mlp.input") or tc.output != f"blocks.{tc.layer}.mlp":
            raise FeatureError(f"{tc!r} is not a transcoder of one block's MLP (blocks.L.mlp.input -> blocks.L.mlp).")
        if tc.layer in out:
            raise FeatureError(f"Two transcoders of block {tc.layer}'s MLP were given; give one per layer.")
        out[tc.layer] = tc
    if not out:
        raise FeatureError("No transcoders were given.")
    return out


@contextmanager
def mlp_inputs(lm: Any, layers: list[int], keep: dict[int, torch.Tensor]) -> Iterator[None]:
    """Keep each listed block's MLP input ``[pos, d_model]`` (first row of the batch) in ``keep[layer]``."""
    from .dictionary import read_mlp_input

    with ExitStack() as stack:
        for l in layers:
            stack.enter_context(read_mlp_input(lm, l, lambda v, _l=l: keep.__setitem__(_l, v[0])))
        yield


__all__ = ["Frozen", "load_transcoders", "mlp_inputs"]
