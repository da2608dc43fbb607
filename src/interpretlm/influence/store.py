"""The on-disk index: a manifest, the training texts and shards of projected gradients (safetensors).

Every file is written to a temporary name in the same folder and moved into place with
``os.replace``, so a shard is either whole or absent: an interrupted job leaves whole shards, and
running it again computes only the missing ones (at most the one that was being written when it
stopped, plus those never started).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``tensors`` to ``path`` (safetensors) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def shard_path(folder: Path, phase: str, i: int) -> Path:
    """The file of shard ``i`` of ``phase`` (``grads``, ``fisher``, ``lambda``)."""
    return folder / phase / f"shard-{i:05d}.safetensors"


def load(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file into CPU tensors."""
    return load_file(str(path))


def disk_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
