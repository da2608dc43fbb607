"""Engines: where corpus-scale jobs run, in this process or across a Ray cluster, on the same stores.

An upper layer like the command line and the app: it runs the job kinds the method families
declare (:mod:`interpretlm.jobs`; today ``activations`` and ``mine``, the corpus pass of
``il.maximize``) and names no family. Every job kind's verb takes ``engine=``:

* ``engine="local"`` (default): this process, shard after shard (the family's own loop);
* ``engine="ray"``: Ray actors, each loading the model once from its load spec
  (``il.load``'s arguments, recorded on the model as ``lm.load_spec``), compute shards and
  write them to the store; the driver records each finished shard in the manifest.

Both write the same store (byte-identical shards and manifest), so a job started by one
resumes under the other, and an interrupted job recomputes at most the shards in flight.
Ray is imported only when the Ray engine is used (the ``ray`` extra).

Example:
    >>> import tempfile, interpretlm as il
    >>> from interpretlm.testing import save_tiny
    >>> folder = save_tiny(tempfile.mkdtemp(), "llama")
    >>> store = il.activations(folder, ["The cat sat.", "Dogs bark."], "resid_post", path=tempfile.mkdtemp() + "/a",
    ...                        shard_size=1, engine="local")
    >>> store["blocks.1.resid_post"].shape[1], store.manifest["n_shards"]
    (64, 2)
    >>> il.engine.ray(num_cpus=2)  # doctest: +SKIP
    >>> il.activations(folder, texts, "resid_post", path="/shared/acts", engine="ray")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from .. import jobs
from ..jobs import EngineError, JobKind, LoadSpec
from ..model import LM


class LocalEngine:
    """Runs a job in this process: the job kind's own loop (``kind.local``), on a model loaded once.

    Attributes:
        timings: seconds the last job spent loading the model (``load``, 0 for a loaded model) and
            running the job kind's loop (``job``: shards computed and written, the store opened).
    """

    name = "local"

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def run(self, kind: JobKind, model: Any, values: dict[str, Any]) -> Any:
        """Run ``kind`` on ``model`` (an :class:`~interpretlm.model.LM` or a load spec) with the verb's arguments."""
        t0 = time.perf_counter()
        lm = model if isinstance(model, LM) else LoadSpec.of(model).load()
        t1 = time.perf_counter()
        out = kind.local(lm, **values)
        self.timings = {"load": t1 - t0, "job": time.perf_counter() - t1}
        return out

    def __repr__(self) -> str:
        return "LocalEngine()"


_DEFAULT: dict[str, Any] = {"local": LocalEngine(), "ray": None}


def local() -> LocalEngine:
    """The local engine (this process)."""
    return _DEFAULT["local"]


def ray(address: str | None = None, *, num_cpus: int | None = None, num_workers: int | None = None,
        runtime_env: dict[str, Any] | None = None, connect: bool = True, **init_options: Any) -> Any:
    """Configure the Ray engine that ``engine="ray"`` uses, and connect to the cluster now.

    Args:
        address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
            ``None`` starts a local cluster in this process (``ray.init()``).
        num_cpus: CPUs of a local cluster (``None``: all).
        num_workers: actors per job (default: the cluster's CPUs, at most the shards to do; on a cluster
            that is this machine alone, at most its free cores: see ``RayEngine.worker_count``).
        runtime_env: Ray's runtime environment for the workers (``{"pip": [...]}``,
            ``{"env_vars": {...}}``...): they must import the same interpretlm.
        connect: connect now (an unreachable address fails here, before any work).
        init_options: other ``ray.init`` keywords.

    Returns:
        the :class:`~interpretlm.engine.ray_engine.RayEngine` now used by ``engine="ray"``.

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> il.engine.ray(num_cpus=2)  # doctest: +SKIP
        RayEngine(address=None, num_cpus=2)
    """
    from .ray_engine import RayEngine

    eng = RayEngine(address=address, num_cpus=num_cpus, num_workers=num_workers, runtime_env=runtime_env,
                    init_options=init_options)
    if connect:
        eng.connect()
    _DEFAULT["ray"] = eng
    return eng


def get(engine: Any) -> Any:
    """The engine ``engine`` names: ``"local"``, ``"ray"`` (configured by :func:`ray`, else a local cluster) or an engine."""
    if engine is None or engine == "local":
        return _DEFAULT["local"]
    if engine == "ray":
        if _DEFAULT["ray"] is None:
            from .ray_engine import RayEngine

            _DEFAULT["ray"] = RayEngine()
        return _DEFAULT["ray"]
    if hasattr(engine, "run"):
        return engine
    raise EngineError(f"engine={engine!r}: use 'local', 'ray' or an engine (il.engine.ray(...)).")


def run(kind: str, model: Any, *args: Any, engine: Any = "local", **kwargs: Any) -> Any:
    """Run the job kind ``kind`` (``"activations"``...) with its verb's arguments on an engine.

    ``model`` is a loaded model (local engine, or one loaded by ``il.load``, whose
    ``load_spec`` the Ray engine reuses) or a load spec: a name, folder, or
    ``{"name": ..., **il.load options}``.
    """
    return verb(kind)(model, *args, engine=engine, **kwargs)


@functools.lru_cache(maxsize=None)
def verb(name: str) -> Callable[..., Any]:
    """The public function of job kind ``name``: its local function plus ``engine=``.

    ``il.activations`` is ``verb("activations")``.
    """
    kind = jobs.kind(name)
    sig = inspect.signature(kind.local)
    first = next(iter(sig.parameters))

    @functools.wraps(kind.local)
    def public(model: Any, *args: Any, engine: Any = "local", **kwargs: Any) -> Any:
        try:
            bound = sig.bind(model, *args, **kwargs)
        except TypeError as exc:
            from ..errors import OptionError

            raise OptionError(f"{kind.verb}: {exc}. Its arguments: {', '.join(sig.parameters)}, engine.") from exc
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop(first)
        for name in [p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]:
            values.update(values.pop(name, {}))   # the method's options, as the keywords they were given as
        eng = get(engine)
        if eng is not _DEFAULT["local"]:   # the local engine runs every method of a shared verb (il.maximize)
            kind.validate(values)
        return eng.run(kind, model, values)

    params = list(sig.parameters.values())
    var = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params.append(inspect.Parameter("engine", inspect.Parameter.KEYWORD_ONLY, default="local"))
    params += var
    public.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return public


def verbs() -> dict[str, Callable[..., Any]]:
    """The public function of every job kind, by verb (``{"activations": il.activations}``)."""
    from ..registry import load_all

    load_all()
    return {k.verb: verb(k.name) for k in jobs.kinds().values()}


# What ``il.<name>`` finds here (the package's functions are reached as ``il.engine.ray`` ..., not as ``il.ray``).
__all__ = ["EngineError", "LoadSpec"]


def __getattr__(name: str) -> Any:
    if name == "RayEngine":
        from .ray_engine import RayEngine

        return RayEngine
    raise AttributeError(name)

