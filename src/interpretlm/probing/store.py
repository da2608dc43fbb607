"""Batched activation extraction into a (resumable) on-disk store.

``activations(lm, texts, components="resid_post", path="acts/")`` runs the model once per
batch with every requested component captured at the same time, and writes the result in
*shards* of ``shard_size`` texts (``shard-00000.safetensors``...) next to a
``manifest.json``. Each shard is written atomically and only then recorded in the
manifest, so a job that is interrupted and started again skips the finished shards and
recomputes at most the one it was working on; the store it ends with is byte-for-byte the
one an uninterrupted run writes (the batches are the same, hence the same numbers). The
folder is written through the core's :mod:`interpretlm.shard_store`, which mining's folders
(``il.maximize(..., path=)``) use too.

Two layouts:

* token level (``pooling="none"``): every real token of every text (or only the
  ``positions`` asked for), concatenated: ``store[name]`` is ``[n_tokens, d]`` and
  ``store.row_ptr`` ``[n_texts + 1]`` says which rows belong to which text;
* pooled (``"mean"``, ``"first"``, ``"last"`` over the text's own tokens, special tokens
  left out): ``store[name]`` is ``[n_texts, d]``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ComponentError, InterpretLMError
from ..jobs import JobKind, register_kind
from ..progress import bar as progress_bar
from ..results import atomic_write
from ..shard_store import ShardStoreError, holds_files, read_manifest, record_shard, remove_partial, write_shard
from .errors import ProbingError, StoreError

STORE_FORMAT = 1
POOLINGS = ("none", "mean", "first", "last")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def expand_components(lm: Any, components: str | Sequence[str], layers: str | int | Sequence[int] = "all") -> list[str]:
    """Canonical names for a component kind and layers.

    ``"resid_post"`` with ``layers="all"`` is ``["embed", "blocks.0.resid_post", ...]`` (the
    embeddings come first, so a layer curve starts at the input); other block kinds
    (``"attn"``, ``"mlp"``, ``"resid_pre"``, ``"attn.heads"``, ``"mlp.neurons"``) give one name
    per layer; full names (``"blocks.3.mlp"``, ``"embed"``, ``"final_norm"``) pass through.

    Example:
        >>> expand_components(lm, "resid_post", layers=[0, 2])  # doctest: +SKIP
        ['blocks.0.resid_post', 'blocks.2.resid_post']
    """
    kinds = [components] if isinstance(components, str) else list(components)
    if not kinds:
        raise ComponentError("No components were given: pass e.g. components='resid_post'.")
    if layers == "all":
        idx = list(range(lm.n_layers))
    elif isinstance(layers, int):
        idx = [layers]
    else:
        idx = [int(i) for i in layers]
    for i in idx:
        if not -lm.n_layers <= i < lm.n_layers:
            raise ComponentError(f"Layer {i} is out of range: the model has {lm.n_layers} layers "
                                 f"(0..{lm.n_layers - 1}).")
    idx = sorted({i % lm.n_layers for i in idx})
    known = set(lm.component_names())
    names: list[str] = []
    for kind in kinds:
        if kind in known:
            names.append(kind)
            continue
        if f"blocks.0.{kind}" not in known:
            raise ComponentError(
                f"Unknown component {kind!r}. Give a block kind (resid_post, resid_pre, attn, mlp, attn.heads, "
                f"mlp.neurons) or a canonical name such as 'blocks.0.resid_post'; see lm.component_names().")
        if kind == "resid_post" and layers == "all":
            names.append("embed")
        names += [f"blocks.{i}.{kind}" for i in idx]
    for n in names:
        if n.endswith("attn.pattern"):
            raise ComponentError(
                f"{n!r} has one value per (query, key) pair, not a vector per token, so it cannot be "
                "probed; probe 'attn.heads' (per-head outputs) or 'attn' instead.")
    return list(dict.fromkeys(names))


def layer_of(name: str) -> int:
    """The block index of a canonical name (``-1`` for ``embed``, a large number for the top)."""
    m = re.match(r"blocks\.(\d+)\.", name)
    if m:
        return int(m.group(1))
    return -1 if name == "embed" else 10**6


@dataclass
class ActivationStore:
    """Activations of some components over a list of texts (in memory or on disk).

    Attributes:
        components: the canonical names stored.
        pooling: ``"none"`` (token level) or ``"mean"`` / ``"first"`` / ``"last"``.
        n_texts: number of texts.
        row_ptr: ``[n_texts + 1]`` (token level) text ``i`` owns rows ``row_ptr[i]:row_ptr[i+1]``.
        token_ids: ``[n_rows]`` the token id of each row (token level).
        positions: ``[n_rows]`` each row's position in its text (token level).
        path: the folder of an on-disk store, ``None`` in memory.
        manifest: what the store holds (model, components, shards...).
        computed_shards: shards computed by the call that returned this store (the others
            were found finished on disk).
    """

    components: list[str]
    pooling: str
    n_texts: int
    data: dict[str, torch.Tensor]
    row_ptr: torch.Tensor | None = None
    token_ids: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    path: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    computed_shards: list[int] = field(default_factory=list)

    def __getitem__(self, name: str) -> torch.Tensor:
        """``[n_rows, d]`` (token level) or ``[n_texts, d]`` (pooled) for one component."""
        if name not in self.data:
            raise ComponentError(f"{name!r} is not in this store; it holds {self.components}.")
        return self.data[name]

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        d = next(iter(self.data.values())).shape if self.data else ()
        return (f"ActivationStore({len(self.components)} components, {self.n_texts} texts, pooling={self.pooling!r}, "
                f"shape {tuple(d)}{where})")

    def text_rows(self, name: str, i: int) -> torch.Tensor:
        """``[pos, d]`` the token rows of text ``i`` (token level) or ``[1, d]`` (pooled)."""
        x = self[name]
        if self.row_ptr is None:
            return x[i:i + 1]
        return x[int(self.row_ptr[i]):int(self.row_ptr[i + 1])]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ActivationStore":
        """Read a finished on-disk store written by :func:`activations`."""
        path = Path(path)
        manifest = _read_manifest(path)
        if manifest is None:
            raise StoreError(f"{path} holds no activation store (no manifest.json); write one with il.activations.")
        n_shards = manifest["n_shards"]
        missing = [k for k in range(n_shards) if str(k) not in manifest["shards"]]
        if missing:
            raise StoreError(f"The store at {path} is unfinished ({len(missing)} of {n_shards} shards missing); "
                             "run the same il.activations(...) call again to resume it.")
        return _assemble(path, manifest, [])


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(path)
    except ShardStoreError as exc:                       # the probing family's own error type, as before
        raise StoreError(f"{exc} (il.activations extracts it again)") from exc


def _fingerprint(config: dict[str, Any], texts: Sequence[str], positions: Sequence[Sequence[int]] | None) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    if positions is not None:
        h.update(json.dumps([list(map(int, p)) for p in positions]).encode())
    return h.hexdigest()


def _pool(x: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[batch, pos, d]`` -> ``[batch, d]`` over the positions where ``mask`` is True."""
    if pooling == "mean":
        m = mask.to(x.dtype).unsqueeze(-1)
        return (x * m).sum(1) / m.sum(1).clamp_min(1)
    idx = torch.arange(mask.shape[1]).expand_as(mask)
    if pooling == "first":
        pos = torch.where(mask, idx, mask.shape[1]).min(1).values
    else:
        pos = torch.where(mask, idx, -1).max(1).values
    return x[torch.arange(x.shape[0]), pos]


def _run_shard(lm: Any, texts: Sequence[str], names: list[str], pooling: str,
               positions: Sequence[Sequence[int]] | None, batch_size: int, dtype: torch.dtype,
               stop_layer: int | None) -> dict[str, torch.Tensor]:
    """Activations of one shard: ``{name: [rows, d]}`` plus ``row_ptr``/``token_ids``/``positions``."""
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    lengths, ids_out, pos_out = [], [], []
    head_needed = "unembed" in names
    with lm.capture(names) as cache, torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = lm.run(list(texts[start:start + batch_size]), until=stop_layer, head=head_needed)
            real = batch.attention_mask.bool()
            if pooling == "none":
                if positions is None:
                    sel = [torch.nonzero(real[r]).flatten() for r in range(batch.size)]
                else:
                    sel = [torch.as_tensor(list(positions[start + r]), dtype=torch.long) for r in range(batch.size)]
                    for r, p in enumerate(sel):
                        n = int(real[r].sum())
                        if len(p) and (int(p.min()) < 0 or int(p.max()) >= n):
                            raise ProbingError(
                                f"Text {start + r} has {n} tokens; positions {p.tolist()} fall outside it.")
                rows = torch.cat([torch.full((len(p),), r, dtype=torch.long) for r, p in enumerate(sel)])
                cols = torch.cat(sel) if sel else torch.zeros(0, dtype=torch.long)
                lengths += [len(p) for p in sel]
                ids_out.append(batch.input_ids[rows, cols])
                pos_out.append(cols)
            else:
                mask = batch.in_prompt.clone()
                empty = ~mask.any(1)
                mask[empty] = real[empty]   # token-id rows of only special tokens still pool something
            for n in names:
                x = cache[n].detach().float().cpu()
                x = x.reshape(x.shape[0], x.shape[1], -1)   # attn.heads: [b, pos, head*d_head]
                if pooling == "none":
                    parts[n].append(x[rows, cols].to(dtype))
                else:
                    parts[n].append(_pool(x, mask, pooling).to(dtype))
    out = {n: torch.cat(v).contiguous() for n, v in parts.items()}
    if pooling == "none":
        out["__row_ptr__"] = torch.tensor([0] + lengths, dtype=torch.long).cumsum(0)
        out["__token_ids__"] = torch.cat(ids_out).contiguous()
        out["__positions__"] = torch.cat(pos_out).contiguous()
    return out


def _assemble(path: Path | None, manifest: dict[str, Any], computed: list[int],
              shards: dict[int, dict[str, torch.Tensor]] | None = None) -> ActivationStore:
    from safetensors.torch import load_file

    names = manifest["components"]
    loaded = []
    for k in range(manifest["n_shards"]):
        if shards is not None and k in shards:
            loaded.append(shards[k])
        else:
            f = path / manifest["shards"][str(k)]["file"]
            if not f.exists():
                raise StoreError(f"Shard file {f} listed in the manifest is missing; delete {path} and extract again.")
            loaded.append(load_file(str(f)))
    data = {n: torch.cat([s[n] for s in loaded]) for n in names}
    store = ActivationStore(components=names, pooling=manifest["pooling"], n_texts=manifest["n_texts"],
                            data=data, path=path, manifest=manifest, computed_shards=computed)
    if manifest["pooling"] == "none":
        ptr, offset = [torch.zeros(1, dtype=torch.long)], 0
        for s in loaded:
            ptr.append(s["__row_ptr__"][1:] + offset)
            offset += int(s["__row_ptr__"][-1])
        store.row_ptr = torch.cat(ptr)
        store.token_ids = torch.cat([s["__token_ids__"] for s in loaded])
        store.positions = torch.cat([s["__positions__"] for s in loaded])
    return store


def activations(lm: Any, texts: str | Sequence[str], components: str | Sequence[str] = "resid_post", *,
                layers: str | int | Sequence[int] = "all", pooling: str = "none",
                positions: Sequence[Sequence[int]] | None = None, path: str | os.PathLike | None = None,
                shard_size: int = 256, batch_size: int = 16, dtype: str = "float32",
                overwrite: bool = False, progress: bool | None = None) -> ActivationStore:
    """Extract activations of canonical components over texts, in memory or into a resumable store.

    Args:
        lm: the model handle (``il.activations`` also takes a load spec: a name, a folder or
            ``{"name": ..., **il.load options}``, loaded by the engine's workers).
        texts: the texts (one forward pass per ``batch_size`` of them).
        components: a block kind (``"resid_post"``, ``"attn"``, ``"mlp"``, ``"attn.heads"``,
            ``"mlp.neurons"``, ``"resid_pre"``) expanded over ``layers``, or canonical names.
        layers: ``"all"``, a layer index or a list of them (for block kinds).
        pooling: ``"none"`` keeps tokens (``[n_tokens, d]`` per component); ``"mean"``,
            ``"first"``, ``"last"`` pool over each text's own tokens (``[n_texts, d]``).
        positions: with ``pooling="none"``, per text, the token positions to keep
            (default: every real token).
        path: a folder to write shards and ``manifest.json`` to; ``None`` keeps everything
            in memory. Running the same call again on a half-written folder resumes it.
        shard_size: texts per shard (the most an interruption can cost).
        batch_size: texts per forward pass.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` for the stored values.
        overwrite: replace a store of a different request at ``path`` instead of raising.
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        an :class:`ActivationStore`; ``store["blocks.3.resid_post"]`` is ``[n_tokens, d_model]``
        (token level, ``store.row_ptr`` maps texts to rows) or ``[n_texts, d_model]`` (pooled).

    ``il.activations`` is this function run by an engine (``engine="local"`` or ``"ray"``,
    see :mod:`interpretlm.engine`); both write the same store, so either resumes the other's.

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> lm = il.load()  # doctest: +SKIP
        >>> store = il.activations(lm, ["The cat sat.", "Dogs bark."], "resid_post", path="acts/")  # doctest: +SKIP
        >>> store["blocks.5.resid_post"].shape  # doctest: +SKIP
        torch.Size([7, 576])
    """
    kind = ACTIVATIONS
    args = dict(texts=texts, components=components, layers=layers, pooling=pooling, positions=positions,
                shard_size=shard_size, batch_size=batch_size, dtype=dtype)
    plan = kind.plan(lm, args)   # everything is checked before anything is written
    texts = plan["args"]["texts"]
    todo = kind.prepare(path, plan, overwrite) if path is not None else list(range(plan["manifest"]["n_shards"]))
    rows = kind.shard_rows(plan)
    computed: list[int] = []
    kept: dict[int, dict[str, torch.Tensor]] = {}
    n = len(texts)
    bar = progress_bar(n, "activations", progress, initial=n - sum(rows[k][1] - rows[k][0] for k in todo))
    try:
        for k in todo:
            lo, hi = rows[k]
            shard = kind.compute(lm, plan, kind.shard_args(plan["args"], lo, hi))
            computed.append(k)
            if path is None:
                kept[k] = shard
            else:
                kind.record(path, plan, k, kind.write(path, plan, k, shard))
            bar.update(hi - lo)
    finally:
        bar.close()
    if path is None:
        return _assemble(None, plan["manifest"], computed, kept)
    return kind.finish(path, plan, computed)


class ActivationsJob(JobKind):
    """The activation store as a sharded job kind (see :mod:`interpretlm.jobs`): what the
    local loop above and the Ray engine both run, step by step, on the same store."""

    name = "activations"
    verb = "activations"

    local = staticmethod(activations)

    def plan(self, lm: Any, args: dict[str, Any]) -> dict[str, Any]:
        texts, pooling, positions = args["texts"], args.get("pooling", "none"), args.get("positions")
        dtype, batch_size, shard_size = args.get("dtype", "float32"), args.get("batch_size", 16), \
            args.get("shard_size", 256)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ProbingError("No texts were given: pass a non-empty list of texts.")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ProbingError(f"Text {i} is {'empty' if isinstance(t, str) else type(t).__name__}: "
                                   "every text must be a non-empty string.")
        if pooling not in POOLINGS:
            raise ProbingError(f"pooling={pooling!r} is not one of {POOLINGS}.")
        if positions is not None:
            if pooling != "none":
                raise ProbingError("positions= selects tokens, so it needs pooling='none'.")
            if len(positions) != len(texts):
                raise ProbingError(f"positions has {len(positions)} entries for {len(texts)} texts; "
                                   "give one list per text.")
            positions = [[int(p) for p in ps] for ps in positions]
        if dtype not in _DTYPES:
            raise ProbingError(f"dtype={dtype!r} is not one of {sorted(_DTYPES)}.")
        if batch_size < 1 or shard_size < 1:
            raise ProbingError("batch_size and shard_size must be at least 1.")
        names = expand_components(lm, args.get("components", "resid_post"), args.get("layers", "all"))
        for n in names:
            lm.site(n)   # unknown names raise here
        lm.tokenize(texts[: min(len(texts), 4)])   # an unusable text (too long...) fails before writing
        needs_top = any(layer_of(n) >= 10**6 for n in names)
        stop_layer = None if needs_top else max(layer_of(n) for n in names)
        if stop_layer is not None and (stop_layer < 0 or stop_layer == lm.n_layers - 1):
            stop_layer = 0 if stop_layer < 0 else None
        config = {"format": STORE_FORMAT, "model": lm.name,
                  "n_params": sum(p.numel() for p in lm.model.parameters()),
                  "components": names, "pooling": pooling, "dtype": dtype, "shard_size": shard_size,
                  "batch_size": batch_size, "n_texts": len(texts)}
        manifest = dict(config, fingerprint=_fingerprint(config, texts, positions),
                        n_shards=math.ceil(len(texts) / shard_size), shards={})
        return {"manifest": manifest, "stop_layer": stop_layer,
                "args": {"texts": texts, "positions": positions}}

    def shard_rows(self, plan: dict[str, Any]) -> list[tuple[int, int]]:
        m = plan["manifest"]
        return [(k * m["shard_size"], min(m["n_texts"], (k + 1) * m["shard_size"])) for k in range(m["n_shards"])]

    def shard_args(self, args: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
        pos = args.get("positions")
        return {"texts": list(args["texts"][lo:hi]), "positions": None if pos is None else pos[lo:hi],
                "rows": [lo, hi]}

    def prepare(self, path: str | os.PathLike, plan: dict[str, Any], overwrite: bool) -> list[int]:
        folder = Path(path)
        manifest = plan["manifest"]
        old = _read_manifest(folder)
        if old is not None and old.get("fingerprint") != manifest["fingerprint"]:
            if not overwrite:
                raise StoreError(
                    f"{folder} already holds activations of a different request (other texts, model or options). "
                    "Use another path, or pass overwrite=True to replace it.")
            for f in folder.glob("shard-*.safetensors"):
                f.unlink()
            (folder / "manifest.json").unlink()
            old = None
        if old is not None:
            manifest["shards"] = old["shards"]
        elif holds_files(folder) and not overwrite:
            raise StoreError(f"{folder} exists and holds other files; give an empty or new folder.")
        return [k for k in range(manifest["n_shards"])
                if str(k) not in manifest["shards"] or not (folder / manifest["shards"][str(k)]["file"]).exists()]

    def compute(self, lm: Any, plan: dict[str, Any], args: dict[str, Any]) -> dict[str, torch.Tensor]:
        m = plan["manifest"]
        return _run_shard(lm, args["texts"], m["components"], m["pooling"], args["positions"], m["batch_size"],
                          _DTYPES[m["dtype"]], plan["stop_layer"])

    def write(self, path: str | os.PathLike, plan: dict[str, Any], k: int,
              payload: dict[str, torch.Tensor]) -> dict[str, Any]:
        lo, hi = self.shard_rows(plan)[k]
        entry = write_shard(path, k, payload, metadata={"rows": f"{lo}:{hi}"})
        return {"file": entry["file"], "rows": [lo, hi], "sha256": entry["sha256"]}

    def record(self, path: str | os.PathLike, plan: dict[str, Any], k: int, entry: dict[str, Any]) -> None:
        # Shards in index order whatever order they finished in, so every engine writes the same manifest;
        # it is rewritten only after the shard is safely on disk.
        record_shard(path, plan["manifest"], k, entry)

    def finish(self, path: str | os.PathLike, plan: dict[str, Any], computed: Sequence[int]) -> ActivationStore:
        folder = Path(path)
        remove_partial(folder)   # halves of shards whose writer was killed
        if not (folder / "manifest.json").exists():
            atomic_write(folder / "manifest.json",
                         lambda tmp: Path(tmp).write_text(json.dumps(plan["manifest"], indent=1)))
        return _assemble(folder, plan["manifest"], list(computed))


ACTIVATIONS = register_kind(ActivationsJob())


__all__ = ["ActivationStore", "activations", "expand_components", "InterpretLMError"]
