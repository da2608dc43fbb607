"""The store's machinery: a folder of shards of named tensors, each written atomically and listed in a
manifest written only after it, so a job that is interrupted and run again recomputes at most the shards
it was working on.

A folder holds ``manifest.json`` (the request, its fingerprint, ``n_shards`` and ``shards``: for each
finished shard ``k`` its file, what it covers and the file's sha256) and ``shard-NNNNN.safetensors``
files. Both corpus-scale job kinds write their folders through it: the probing family's activation store
(``il.activations``: a shard holds the activations of a range of texts) and mining (``il.maximize``:
a shard holds the mining state of a range of corpus windows, which merge into the state of the whole
pass). Either engine (``engine="local"`` or ``"ray"``) writes the same bytes, so either resumes the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import InterpretLMError
from .results import atomic_write, sha256_of


class ShardStoreError(InterpretLMError, ValueError):
    """A store folder that cannot be used as asked (another request's, damaged, or a missing shard)."""


def shard_name(k: int) -> str:
    """The file name of shard ``k``.

    Example:
        >>> shard_name(3)
        'shard-00003.safetensors'
    """
    return f"shard-{k:05d}.safetensors"


def holds_files(folder: str | Path) -> bool:
    """Whether ``folder`` exists and holds files other than hidden ones (names starting with ``.``).

    Hidden names are left out because they come and go beside a job: the Ray engine's workers each
    write and remove a ``.write-probe-*`` file when they start, possibly while the first worker's plan
    is already checking the folder, and NFS renames a file removed while open to ``.nfs*``.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> (d / ".write-probe-x").touch()
        >>> holds_files(d), holds_files(d / "new")
        (False, False)
        >>> (d / "notes.txt").touch()
        >>> holds_files(d)
        True
    """
    folder = Path(folder)
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """A store folder's manifest, or ``None`` when there is none yet.

    Example:
        >>> import tempfile
        >>> read_manifest(tempfile.mkdtemp()) is None
        True
    """
    f = Path(folder) / "manifest.json"
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except ValueError as exc:
        raise ShardStoreError(f"{f} is damaged ({exc}); delete the folder and run the job again.") from exc


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` atomically, its shards in index order (so every engine writes the same bytes).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> write_manifest(d, {"fingerprint": "f", "shards": {"10": {}, "9": {}}})
        >>> list(read_manifest(d)["shards"])
        ['9', '10']
    """
    manifest["shards"] = dict(sorted(manifest.get("shards", {}).items(), key=lambda kv: int(kv[0])))
    atomic_write(Path(folder) / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))


def write_shard(folder: str | Path, k: int, tensors: dict[str, torch.Tensor],
                metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Write shard ``k`` (``{name: tensor}``) atomically; returns its manifest entry ``{"file", "sha256"}``
    (add what it covers before :func:`record_shard`).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> e = write_shard(d, 0, {"x": torch.ones(2)})
        >>> e["file"], load_shard(d, e)["x"].tolist()
        ('shard-00000.safetensors', [1.0, 1.0])
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    fname = shard_name(k)
    atomic_write(folder / fname, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return {"file": fname, "sha256": sha256_of(folder / fname)}


def record_shard(folder: str | Path, manifest: dict[str, Any], k: int, entry: dict[str, Any]) -> None:
    """List shard ``k`` in ``manifest`` and rewrite the manifest (only once the shard is safely on disk).

    Example:
        >>> import tempfile
        >>> d, m = tempfile.mkdtemp(), {"fingerprint": "f", "n_shards": 2, "shards": {}}
        >>> record_shard(d, m, 1, dict(write_shard(d, 1, {"x": torch.zeros(1)}), rows=[5, 9]))
        >>> finished_shards(d, read_manifest(d)), read_manifest(d)["shards"]["1"]["rows"]
        ([1], [5, 9])
    """
    manifest.setdefault("shards", {})[str(k)] = entry
    write_manifest(folder, manifest)


def load_shard(folder: str | Path, entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a shard listed in a manifest (``entry``: its manifest entry); see :func:`write_shard`."""
    from safetensors.torch import load_file

    f = Path(folder) / entry["file"]
    if not f.exists():
        raise ShardStoreError(f"Shard file {f} listed in the manifest is missing; delete {Path(folder)} and run "
                              "the job again.")
    return load_file(str(f))


def finished_shards(folder: str | Path, manifest: dict[str, Any]) -> list[int]:
    """The shards ``manifest`` lists whose file is on disk (the others must be computed again).

    Example:
        >>> import tempfile
        >>> finished_shards(tempfile.mkdtemp(), {"shards": {"0": {"file": "shard-00000.safetensors"}}})
        []
    """
    return [int(k) for k, e in manifest.get("shards", {}).items() if (Path(folder) / e["file"]).exists()]


def remove_partial(folder: str | Path) -> None:
    """Delete the halves of shards whose writer was killed (``atomic_write``'s temporary names).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / ".shard-00000.safetensors.x.tmp").write_bytes(b"half")
        >>> remove_partial(d); list(d.iterdir())
        []
    """
    for tmp in Path(folder).glob(".shard-*.tmp"):
        tmp.unlink(missing_ok=True)


__all__ = ["ShardStoreError", "finished_shards", "load_shard", "read_manifest", "record_shard", "remove_partial",
           "shard_name", "write_manifest", "write_shard"]
