"""Reading dictionaries in the formats the field publishes: SAELens (``cfg.json`` +
``sae_weights.safetensors``) and EleutherAI sparsify (``cfg.json`` + ``sae.safetensors``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .dictionary import SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, _BLOCK, canonical_component, Dictionary
from .errors import DictionaryFormatError


def load(path: str | Path, *, component: str | None = None) -> Dictionary:
    """Load a dictionary from a folder in SAELens or EleutherAI sparsify format.

    Args:
        path: a folder holding ``cfg.json`` and ``sae_weights.safetensors`` (SAELens) or
            ``sae.safetensors`` (sparsify).
        component: the canonical component it reads, when the file's hook name is not one we
            can map (TransformerLens ``blocks.8.hook_resid_pre`` and sparsify ``layers.6`` are mapped).

    Raises:
        DictionaryFormatError: no such folder, or neither format.

    Example:
        >>> import tempfile
        >>> folder = Dictionary.random(8, 16, component="blocks.0.resid_post", k=2).save(tempfile.mkdtemp())
        >>> load(folder)
        Dictionary(SAE topk, k=2, 16 features, blocks.0.resid_post)
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DictionaryFormatError(f"{folder} is not a folder; a dictionary is a folder with cfg.json and "
                                    f"{SAELENS_WEIGHTS} (SAELens) or {SPARSIFY_WEIGHTS} (EleutherAI sparsify).")
    cfg_file = folder / "cfg.json"
    if not cfg_file.exists():
        subs = sorted(p.name for p in folder.iterdir() if (p / "cfg.json").exists())
        hint = f" It has dictionaries in sub-folders {subs[:6]}: load one of them." if subs else ""
        raise DictionaryFormatError(f"{folder} has no cfg.json, so it is neither a SAELens nor a sparsify "
                                    f"dictionary.{hint}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as exc:
        raise DictionaryFormatError(f"{cfg_file} is not valid JSON ({exc}).") from None
    from safetensors.torch import load_file

    if (folder / SAELENS_WEIGHTS).exists():
        sae = _from_saelens(cfg, load_file(str(folder / SAELENS_WEIGHTS)), component)
    elif (folder / SPARSIFY_WEIGHTS).exists():
        sae = _from_sparsify(cfg, load_file(str(folder / SPARSIFY_WEIGHTS)), component or folder.name)
    else:
        raise DictionaryFormatError(f"{folder} has cfg.json but neither {SAELENS_WEIGHTS} (SAELens) nor "
                                    f"{SPARSIFY_WEIGHTS} (EleutherAI sparsify): not a format we recognise.")
    sae.path = str(folder)
    return sae


def _need(t: dict[str, torch.Tensor], *names: str, fmt: str) -> list[torch.Tensor]:
    missing = [n for n in names if n not in t]
    if missing:
        raise DictionaryFormatError(f"The {fmt} weights lack {missing}; they hold {sorted(t)}.")
    return [t[n] for n in names]


def _from_saelens(cfg: dict[str, Any], t: dict[str, torch.Tensor], component: str | None) -> Dictionary:
    W_enc, b_enc, W_dec, b_dec = _need(t, "W_enc", "b_enc", "W_dec", "b_dec", fmt="SAELens")
    ours = cfg.get("interpretlm", {})
    arch = str(cfg.get("architecture", "standard"))
    act_str = str(cfg.get("activation_fn_str", cfg.get("activation_fn", "")))
    if arch.startswith("gated"):
        raise DictionaryFormatError("Gated SAEs (SAELens architecture 'gated') are not supported; convert to "
                                    "JumpReLU or use a TopK / JumpReLU / standard SAE.")
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm != "none":
        raise DictionaryFormatError(f"normalize_activations={norm!r} needs a dataset-dependent scaling factor that "
                                    "cfg.json does not hold; fold it into the weights (SAELens "
                                    "`fold_activation_norm_scaling_factor`) and save again.")
    if cfg.get("rescale_acts_by_decoder_norm"):
        # SAELens multiplies pre-activations by the decoder rows' norms and divides activations by them before
        # decoding: folded into the weights, the activations and the reconstruction are SAELens's own
        norms = W_dec.float().norm(dim=1)
        W_enc, b_enc, W_dec = W_enc.float() * norms, b_enc.float() * norms, W_dec.float() / norms.unsqueeze(1)
    if "topk" in arch or act_str == "topk":
        activation = "topk"
        k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    elif "jumprelu" in arch or "threshold" in t:
        activation, k = "jumprelu", None
    else:
        activation, k = "relu", None
    hook = component or ours.get("component") or cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")
    if not hook:
        raise DictionaryFormatError("cfg.json names no hook (hook_name); pass component='blocks.N.resid_post'.")
    out = ours.get("output") or cfg.get("hook_name_out") or (cfg.get("metadata") or {}).get("hook_name_out")
    is_tc = "transcoder" in arch or (out is not None and out != hook)
    out = out if is_tc else None
    if is_tc and not out:
        raise DictionaryFormatError("A transcoder's cfg.json must name its output hook (hook_name_out).")
    d_in, d_sae = cfg.get("d_in", W_enc.shape[0]), cfg.get("d_sae", W_enc.shape[1])
    if tuple(W_enc.shape) != (d_in, d_sae):
        raise DictionaryFormatError(f"W_enc is {tuple(W_enc.shape)} but cfg.json says d_in={d_in}, d_sae={d_sae}.")
    return Dictionary(W_enc, b_enc, W_dec, b_dec, component=canonical_component(hook),
                      output=canonical_component(out) if out else None, activation=activation,
                      k=int(k) if k is not None else None, threshold=t.get("threshold"),
                      subtract_b_dec=bool(cfg.get("apply_b_dec_to_input", not is_tc)) and not is_tc,
                      name=ours.get("name", ""), metrics=ours.get("metrics"), source="saelens")


def _from_sparsify(cfg: dict[str, Any], t: dict[str, torch.Tensor], hookpoint: str) -> Dictionary:
    W, b, W_dec, b_dec = _need(t, "encoder.weight", "encoder.bias", "W_dec", "b_dec", fmt="sparsify")
    if cfg.get("activation", "topk") != "topk":
        raise DictionaryFormatError(f"sparsify activation {cfg.get('activation')!r} is not supported (TopK only).")
    if "W_skip" in t or cfg.get("skip_connection"):
        raise DictionaryFormatError("sparsify dictionaries with a skip connection (W_skip) are not supported.")
    k = cfg.get("k")
    if not k:
        raise DictionaryFormatError("The sparsify cfg.json has no k.")
    comp = canonical_component(hookpoint)
    transcode = bool(cfg.get("transcode", False))
    out = None
    if transcode:
        m = _BLOCK.match(comp)
        if not m or m.group(2) != "mlp":
            raise DictionaryFormatError(f"A sparsify transcoder's hookpoint must be an MLP (layers.N.mlp); got "
                                        f"{hookpoint!r}.")
        comp, out = f"blocks.{m.group(1)}.mlp.input", comp
    return Dictionary(W.T.contiguous(), b, W_dec, b_dec, component=comp, output=out, activation="topk", k=int(k),
                      subtract_b_dec=not transcode, source="sparsify")
