"""Corpus-scale jobs as plain data: load specs, sharded job kinds, and the jobs an engine runs.

A corpus-scale job (activation extraction, ...) is split into *shards* of its data, each
computed independently and written to an on-disk store whose manifest records the finished
shards. A :class:`JobKind` declares the steps, so that an engine (``interpretlm.engine``:
the local one in this process, or Ray across a cluster) can run any kind without naming it:

* ``plan(lm, args)`` checks the request before anything is written and returns plain data
  (the store's manifest to be, the shards' rows, what a shard needs);
* ``prepare(path, plan, overwrite)`` checks the folder (a store of another request, stray
  files) and returns the shards still to compute (a half-written store resumes);
* ``compute(lm, plan, shard_args)`` computes one shard from its slice of the data
  (``shard_args(args, lo, hi)``), ``write(path, plan, k, payload)`` writes it atomically and
  returns its manifest entry, ``record(path, plan, k, entry)`` adds it to the manifest
  (only the driver does this, so the manifest has one writer);
* ``finish(path, plan, computed)`` opens the finished store (with ``lm=`` on a worker when
  ``finish_on_worker``: mining recomputes its detailed examples there).

A :class:`Job` (one shard of one request: kind, load spec, plan, the shard's data, the
store path) is what an engine sends to a worker; :class:`LoadSpec` is how a worker rebuilds
the model (``il.load`` records it on the model as ``lm.load_spec``).

Example:
    >>> from interpretlm.jobs import LoadSpec
    >>> spec = LoadSpec.of({"name": "some/folder", "dtype": "float32"})
    >>> spec.to_dict()
    {'name': 'some/folder', 'options': {'dtype': 'float32'}}
    >>> LoadSpec.from_dict(spec.to_dict()) == spec
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InterpretLMError


class EngineError(InterpretLMError, RuntimeError):
    """A job an engine cannot run as given (no load spec, an unreachable cluster, an unwritable store...)."""


@dataclass(frozen=True)
class LoadSpec:
    """How to load a model in another process: ``il.load(name, **options)``.

    Attributes:
        name: a built-in name, Hugging Face id, folder or ``.gguf`` path (a folder must be
            reachable at the same path by every worker).
        options: ``il.load``'s keyword arguments as plain data (``dtype``, ``device``,
            ``device_map``, ``max_memory``...).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoadSpec":
        """Inverse of :meth:`to_dict`."""
        return cls(str(d["name"]), dict(d.get("options") or {}))

    @classmethod
    def of(cls, model: Any) -> "LoadSpec":
        """The load spec of a name / path, a ``{"name": ..., **options}`` dict, a spec, or a loaded model.

        Raises:
            EngineError: a model built in memory (no ``load_spec``), or a spec that is not plain data.
        """
        if isinstance(model, LoadSpec):
            return model
        if isinstance(model, (str, os.PathLike)):
            return cls(os.fspath(model))
        if isinstance(model, dict):
            if "name" not in model:
                raise EngineError(f"A load spec dict needs 'name' (il.load's first argument); got {sorted(model)}.")
            d = dict(model)
            if "options" in d and isinstance(d["options"], dict) and set(d) <= {"name", "options"}:
                spec = cls.from_dict(d)
            else:
                name = d.pop("name")
                spec = cls(os.fspath(name), d)
            try:
                json.dumps(spec.options)
            except TypeError as exc:
                raise EngineError(f"The load options {spec.options!r} are not plain data ({exc}); give dtypes as "
                                  "strings ('float32') and no classes.") from exc
            return spec
        spec = getattr(model, "load_spec", None)
        if spec is None:
            raise EngineError(
                f"{getattr(model, 'name', type(model).__name__)!r} was built in memory, so a worker cannot load it "
                "again. Save it (lm.model.save_pretrained(folder); lm.tokenizer.save_pretrained(folder)) and pass "
                "the folder, or pass the name you gave il.load.")
        return cls.of(spec)

    def load(self) -> Any:
        """``il.load(name, **options)``."""
        from .loading import load

        return load(self.name, **self.options)


@dataclass(frozen=True)
class Job:
    """One shard of one request, as plain data: what a worker needs and nothing else.

    Attributes:
        kind: the job kind's name (``"activations"``).
        model: the load spec (``LoadSpec.to_dict()``).
        plan: the request's plan (``JobKind.plan``'s answer; plain data).
        shard: the shard's index.
        args: the shard's slice of the data (``JobKind.shard_args``).
        path: the store folder (shared by the driver and every worker).
    """

    kind: str
    model: dict[str, Any]
    plan: dict[str, Any]
    shard: int
    args: dict[str, Any]
    path: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return {"kind": self.kind, "model": self.model, "plan": self.plan, "shard": self.shard, "args": self.args,
                "path": self.path}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Job":
        """Inverse of :meth:`to_dict`."""
        return cls(d["kind"], d["model"], d["plan"], int(d["shard"]), d["args"], d["path"])


class JobKind(ABC):
    """A sharded corpus-scale job. Subclasses implement the steps of the module docstring.

    Attributes:
        name: the kind's name (jobs refer to it by name).
        verb: the public function that runs it (``il.<verb>(model, data, ..., path=, engine=)``).
        local: the in-process function ``local(lm, *args, path=, overwrite=, progress=, **options)``
            whose signature the engines' verb takes.
        method: the registered method the kind runs, when its verb is a registry verb with several
            methods (``il.maximize``: ``"mine"``); the verb's other methods run in this process only.
        engine_args: keyword arguments of ``local`` that belong to the run, not the plan.
        finish_on_worker: ``finish`` needs the model (``finish(path, plan, computed, lm=)``): the Ray
            engine runs it on a worker, the local engine in this process.
    """

    name: str = ""
    verb: str = ""
    method: str = ""
    engine_args: tuple[str, ...] = ("path", "overwrite", "progress")
    finish_on_worker: bool = False

    def validate(self, values: dict[str, Any]) -> None:
        """Refuse, before any worker starts, a request no engine can run (the verb's arguments ``values``)."""

    @abstractmethod
    def local(self, lm: Any, *args: Any, **kwargs: Any) -> Any:
        """One step of the job (module docstring)."""

    @abstractmethod
    def plan(self, lm: Any, args: dict[str, Any]) -> dict[str, Any]:
        """One step of the job (module docstring)."""

    @abstractmethod
    def shard_rows(self, plan: dict[str, Any]) -> list[tuple[int, int]]:
        """One step of the job (module docstring)."""

    @abstractmethod
    def shard_args(self, args: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
        """One step of the job (module docstring)."""

    @abstractmethod
    def prepare(self, path: str | os.PathLike, plan: dict[str, Any], overwrite: bool) -> list[int]:
        """One step of the job (module docstring)."""

    def compute(self, lm: Any, plan: dict[str, Any], args: dict[str, Any]) -> Any:
        """One step of the job (module docstring)."""

    def write(self, path: str | os.PathLike, plan: dict[str, Any], k: int, payload: Any) -> dict[str, Any]:
        """One step of the job (module docstring)."""

    def record(self, path: str | os.PathLike, plan: dict[str, Any], k: int, entry: dict[str, Any]) -> None:
        """One step of the job (module docstring)."""

    def finish(self, path: str | os.PathLike, plan: dict[str, Any], computed: Sequence[int], lm: Any = None) -> Any:
        """One step of the job (module docstring)."""

    def release(self, path: str | os.PathLike) -> None:
        """Forget what the driver kept of the job at ``path`` (called when a job ends, finished or not)."""


_KINDS: dict[str, JobKind] = {}


def register_kind(kind: JobKind) -> JobKind:
    """Declare a job kind (method families call this when imported); returns it."""
    if not kind.name or not kind.verb:
        raise ValueError("A job kind needs a name and a verb.")
    _KINDS[kind.name] = kind
    return kind


def kinds() -> dict[str, JobKind]:
    """Every job kind of the imported families, by name (``registry.load_all()`` imports them all).

    Example:
        >>> from interpretlm import jobs, registry
        >>> registry.load_all()
        >>> "activations" in jobs.kinds()
        True
    """
    return dict(_KINDS)


def kind(name: str) -> JobKind:
    """The job kind called ``name``: a registered one, or ``"module:attribute"`` (a kind defined
    outside interpretlm, whose ``name`` is that path, so that workers import it by name)."""
    if name not in _KINDS and ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise EngineError(f"Job kind {name!r} cannot be imported here ({exc}); it must be importable in every "
                              "worker (install its package there, or add it to the runtime environment).") from exc
        if not isinstance(found, JobKind) or found.name != name:
            raise EngineError(f"{name!r} is not a JobKind whose name is {name!r}.")
        register_kind(found)
    if name not in _KINDS:
        from .registry import load_all

        load_all()
    if name not in _KINDS:
        raise EngineError(f"Unknown job kind {name!r}; known: {', '.join(sorted(_KINDS)) or 'none'}.")
    return _KINDS[name]


def run_job(job: Job, lm: Any) -> dict[str, Any]:
    """Compute one job's shard on ``lm`` and write it to the store; returns its manifest entry."""
    k = kind(job.kind)
    payload = k.compute(lm, job.plan, job.args)
    return k.write(job.path, job.plan, job.shard, payload)


__all__ = ["EngineError", "Job", "JobKind", "LoadSpec", "kind", "kinds", "register_kind", "run_job"]
