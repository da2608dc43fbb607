"""The Ray engine: actors that each load the model once compute shards and write them to the store.

The driver (the process that called ``il.activations(..., engine="ray")``):

1. connects to the cluster (``il.engine.ray(address=...)``; an unreachable address fails
   before any work);
2. starts one actor, which loads the model from its load spec and checks that it can write
   the store folder, and asks it for the job's plan (the family's checks of the request run
   there, on the real model, so a bad request fails before anything is written);
3. checks the folder (a store of another request; a half-written one resumes), starts the
   other actors (each loads the model once and checks the folder too), and sends each a
   :class:`~interpretlm.jobs.Job` (plain data: kind, load spec, plan, the shard's data) as
   soon as it is free;
4. records every finished shard in the manifest (the one writer of it), then opens the store.

A worker killed mid-shard is restarted by Ray (``max_restarts``) and the shard is sent again
(``max_task_retries``); shards are written atomically, so a half-written one never counts. A
driver killed mid-job leaves a manifest of the finished shards: running the same call again
(on either engine) recomputes only the others.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from ..errors import InterpretLMError
from ..jobs import EngineError, Job, JobKind, LoadSpec, kind as job_kind, run_job
from ..progress import bar as progress_bar


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise EngineError("The Ray engine needs Ray: pip install 'interpretlm[ray]' (Ray 2.60).") from exc
    return ray


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast on an address nothing listens on (``ray.init`` would retry for a minute)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise EngineError(f"Ray address {address!r} is not 'auto', 'host:port' or 'ray://host:port'.")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise EngineError(f"No Ray cluster answers at {address!r} ({exc}). Start one (ray start --head) or give the "
                          "head node's address (host:6379, or ray://host:10001 for Ray Client).") from exc


def _probe_folder(path: str) -> None:
    """Create the store folder if needed and write (then remove) a file in it."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    os.close(fd)
    os.unlink(tmp)


_IMPORTED = time.time()   # when this worker process had imported interpretlm (torch included)


def _process_start() -> float:
    """When this process started (wall clock), from /proc; the import time where there is no /proc."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return _IMPORTED


class Worker:
    """One Ray actor: loads the model once (on first use) and computes the jobs it is sent."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec, self.lm = spec, None
        self.clock = {"process_start": _process_start(), "imported": _IMPORTED, "created": time.time()}

    def _model(self) -> Any:
        if self.lm is None:
            from ..runtime import use_free_cores

            use_free_cores()   # Ray pins OMP_NUM_THREADS to the actor's CPUs, which this respects
            self.clock["load_start"] = time.time()
            self.lm = LoadSpec.from_dict(self.spec).load()
            self.clock["loaded"] = time.time()
        return self.lm

    def ready(self, path: str | None) -> dict[str, Any]:
        """Load the model and check the store folder; what went wrong, as data, instead of a dead actor.

        Also returns the wall-clock times of the worker's start (``clock``: process start, interpretlm
        imported, actor created, model load started and done), for the engine's timing breakdown."""
        try:
            self._model()
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which raises a clear error
            return {"error": "load", "message": f"{type(exc).__name__}: {exc}"}
        try:
            if path is not None:
                _probe_folder(path)
        except OSError as exc:
            return {"error": "write", "message": f"{type(exc).__name__}: {exc}"}
        return {"pid": os.getpid(), "host": socket.gethostname(), "clock": dict(self.clock, ready=time.time())}

    def plan(self, kind: str, module: str, args: dict[str, Any]) -> dict[str, Any]:
        return _kind(kind, module).plan(self._model(), args)

    def run(self, job: dict[str, Any], module: str) -> dict[str, Any]:
        _kind(job["kind"], module)
        return run_job(Job.from_dict(job), self._model())

    def finish(self, kind: str, module: str, path: str, plan: dict[str, Any], computed: list[int]) -> Any:
        return _kind(kind, module).finish(path, plan, computed, lm=self._model())


def _kind(name: str, module: str) -> JobKind:
    """The job kind ``name``, defined in ``module``: that module is imported (its family registers the kind),
    not every family, which would cost a worker's start a second for nothing."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        pass   # a kind defined elsewhere: jobs.kind finds it by its name or says what is missing
    return job_kind(name)


def _phases(clock: dict[str, float], asked: float) -> dict[str, float]:
    """Seconds of a worker's start, by phase, from its clock (a kept worker's phases are all before ``asked``)."""
    if clock.get("loaded", asked) < asked or "loaded" not in clock:   # loaded before this job asked for it
        return {"kept": 0.0}
    return {"process": max(0.0, clock["process_start"] - asked),          # Ray starts a Python process
            "import": clock["imported"] - max(clock["process_start"], asked),  # ray, interpretlm, torch
            "actor": clock["load_start"] - clock["imported"],               # the actor made, the first call
            "load": clock["loaded"] - clock["load_start"],                  # il.load (transformers, weights)
            "ready": clock["ready"] - clock["loaded"]}                      # the store folder checked


def _this_machine_alone(ray: Any) -> bool:
    """Whether the cluster is one node, the one this process runs on (a local cluster, or ``ray start``
    here): then this machine's load average speaks for the cluster's cores."""
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return len(nodes) == 1 and nodes[0]["NodeID"] == ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - Ray Client and older Rays: assume a real cluster, use all its CPUs
        return False


def _unwrap(ray: Any, exc: BaseException) -> BaseException:
    """The interpretlm error a remote call raised, if that is what it was."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, InterpretLMError) else exc


class RayEngine:
    """Runs job kinds on Ray actors; see the module docstring.

    Attributes:
        address, num_cpus, runtime_env, init_options: how to reach (or start) the cluster.
        num_workers: actors per job (default: :meth:`worker_count`, the cluster's CPUs; on a cluster
            that is this machine alone, its free cores).
        max_restarts: how often a dead worker is restarted (and its shard retried).
        keep_workers: keep the actors (and their loaded models) after a job for the next job
            on the same model, until :meth:`release`; otherwise they end with the job and free
            their CPUs for others. :meth:`start` starts them before the job.
        start_timeout: seconds to wait for the workers to start and load the model.
        workers: ``[{"pid", "host"}]`` of the last job's actors.
        timings: seconds the last job spent starting workers (import, model load, folder check),
            planning, computing and writing shards, and opening the store.
        worker_timings: per worker of the last job, its start by phase (``process``: Ray starting a
            Python process; ``import``: importing Ray's worker, interpretlm and torch; ``actor``: the
            actor created until its first call; ``load``: ``il.load``; ``ready``: the folder check), or
            ``{"kept": 0}`` for a worker kept from the job before.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_workers: int | None = None,
                 runtime_env: dict[str, Any] | None = None, init_options: dict[str, Any] | None = None,
                 max_restarts: int = 3, keep_workers: bool = False, start_timeout: float = 600.0) -> None:
        self.address, self.num_cpus, self.num_workers = address, num_cpus, num_workers
        self.runtime_env, self.init_options = runtime_env, dict(init_options or {})
        self.max_restarts, self.keep_workers, self.start_timeout = max_restarts, keep_workers, start_timeout
        self.workers: list[dict[str, Any]] = []
        self._asked, self._discard = 0.0, False
        self.timings: dict[str, float] = {}
        self.worker_timings: list[dict[str, float]] = []
        self._pool: dict[str, list[Any]] = {}   # load spec (JSON) -> idle actors holding that model
        self._session: str | None = None

    def __repr__(self) -> str:
        return f"RayEngine(address={self.address!r}, num_cpus={self.num_cpus!r})"

    def connect(self) -> Any:
        """Connect to (or start) the cluster; raises :class:`EngineError` if it cannot be reached."""
        ray = _import_ray()
        if self.address is not None:
            _check_reachable(self.address)
        if ray.is_initialized():
            return ray
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, **self.init_options}
        if self.address is not None:
            kwargs["address"] = self.address
        if self.num_cpus is not None and self.address is None:
            kwargs["num_cpus"] = self.num_cpus
        if self.runtime_env is not None:
            kwargs["runtime_env"] = self.runtime_env
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise EngineError(f"Could not connect to the Ray cluster at {self.address!r}: {exc}") from exc
        return ray

    def worker_count(self, ray: Any) -> int:
        """Actors per job: ``num_workers`` if given, else one per CPU of the cluster; on a cluster that is
        this machine alone, at most one per free core (:func:`interpretlm.runtime.free_cores`).

        Why: every fresh worker imports torch and transformers and loads the model (seconds of CPU each),
        and on a machine whose cores other work holds, a second worker's start only takes CPU from the
        first (on a 2-core machine at load average 12-15, a cold 96-text activation job took 0.73x the
        wall time with 1 worker as with 2, whole process; README "Beyond one machine"). It is the rule the
        local engine's torch threads follow, so both engines compute with the same number of cores.

        Example:
            >>> eng = il.engine.ray(num_cpus=2)  # doctest: +SKIP
            >>> eng.worker_count(ray)  # doctest: +SKIP
            2
        """
        if self.num_workers:
            return self.num_workers
        n = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if _this_machine_alone(ray):
            from ..runtime import free_cores

            n = min(n, free_cores())
        return n

    def _actor_class(self, ray: Any) -> Any:
        return ray.remote(num_cpus=1, max_restarts=self.max_restarts,
                          max_task_retries=self.max_restarts)(Worker)

    def start(self, model: Any, *, wait: bool = False) -> None:
        """Start the workers of ``model`` now (a load spec or a model ``il.load`` loaded), so they import
        and load it while this process prepares the data; the next job on that model uses them.

        ``wait=True`` returns once they are ready (raising :class:`EngineError` if they cannot load it).

        Example:
            >>> eng = il.engine.ray(num_cpus=2)  # doctest: +SKIP
            >>> eng.start("smollm2-135m")  # doctest: +SKIP
            >>> texts = [line for line in open("corpus.txt")]  # doctest: +SKIP
            >>> il.activations("smollm2-135m", texts, path="/shared/acts", engine=eng)  # doctest: +SKIP
        """
        spec = LoadSpec.of(model)
        ray = self.connect()
        actors, pending = self._launch(ray, self._actor_class(ray), spec, None, self.worker_count(ray))
        self._pool[json.dumps(spec.to_dict(), sort_keys=True)] = actors
        if wait:
            self.workers, self.worker_timings, deadline = [], [], time.time() + self.start_timeout
            while pending:
                self._ready(ray, pending, spec, "", deadline, actors)

    def _launch(self, ray: Any, cls: Any, spec: LoadSpec, path: str | None, n: int) -> tuple[list[Any], dict[Any, Any]]:
        """``n`` actors for ``spec``: kept ones first, then new ones; returns them and ``{ready ref: actor}``
        of every actor (a kept one answers at once), without waiting: they import and load in parallel."""
        session = ray.get_runtime_context().get_job_id()
        if session != self._session:   # a new ray.init: the old actors are gone
            self._pool, self._session = {}, session
        key = json.dumps(spec.to_dict(), sort_keys=True)
        for other in [k for k in self._pool if k != key]:   # idle workers of another model free their CPUs
            self._end(ray, self._pool.pop(other), None)
        actors = self._pool.pop(key, [])[:n]
        if self.runtime_env is not None:   # also when connected to a cluster started elsewhere
            cls = cls.options(runtime_env=self.runtime_env)
        self._asked = time.time()
        actors += [cls.remote(spec.to_dict()) for _ in range(n - len(actors))]
        return actors, {a.ready.remote(path): a for a in actors}

    def _ready(self, ray: Any, pending: dict[Any, Any], spec: LoadSpec, path: str, deadline: float,
               actors: list[Any]) -> list[Any]:
        """Wait for at least one pending actor to be ready; return those that are (removed from ``pending``).

        Raises :class:`EngineError` when one cannot load the model or write the store, or none is ready by
        ``deadline`` (the job then ends its actors, and keeps none that could not load the model)."""
        done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.time()))
        if not done:
            n = len(actors)
            self._discard = True
            free = ray.available_resources().get("CPU", 0)
            raise EngineError(f"{n} Ray worker(s) did not start within {self.start_timeout:g} s (the cluster has "
                              f"{free:g} CPUs free; each worker takes 1). Ask for fewer (num_workers=) or free "
                              "the cluster.")
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)   # every one ready by now
        ready = []
        for ref in done:
            actor, state = pending.pop(ref), ray.get(ref)
            if "error" in state:
                self._discard = state["error"] == "load"   # workers that cannot load the model are not kept
                if state["error"] == "load":
                    raise EngineError(f"Ray workers cannot load the model {spec.name!r} ({state['message']}). The "
                                      "load spec must name something every worker can reach: a built-in name, a "
                                      "Hugging Face id, or a folder on a shared file system at the same path.")
                raise EngineError(f"Ray workers cannot write the store at {path!r} ({state['message']}). The store "
                                  "must live where every worker can write: a shared file system mounted at the "
                                  "same path.")
            self.workers.append(state)
            self.worker_timings.append(_phases(state["clock"], self._asked))
            ready.append(actor)
        return ready

    def run(self, kind: JobKind, model: Any, values: dict[str, Any]) -> Any:
        """Run ``kind`` with the verb's arguments ``values`` on Ray actors, writing the store at ``values["path"]``."""
        spec = LoadSpec.of(model)
        values = dict(values)
        kind.validate(values)
        run_args = {k: values.pop(k, None) for k in kind.engine_args}
        if run_args.get("path") is None:
            raise EngineError("The Ray engine writes its results to a store: give path= (a folder every worker can "
                              "write, e.g. on a shared file system).")
        path = os.path.abspath(os.fspath(run_args["path"]))
        ray = self.connect()
        cls = self._actor_class(ray)
        self.workers, self.worker_timings, self._discard, t0 = [], [], False, time.perf_counter()
        key = json.dumps(spec.to_dict(), sort_keys=True)
        where = (kind.name, type(kind).__module__)   # workers import the kind's module, not every family
        # Every worker starts (imports torch and transformers, loads the model) at once; the first one ready
        # plans the job (the family's checks, on the real model) while the others are still loading, and each
        # gets a shard as soon as it is ready, so no worker waits for the slowest to start.
        actors, pending = self._launch(ray, cls, spec, path, self.worker_count(ray))
        deadline = time.time() + self.start_timeout
        try:
            idle = self._ready(ray, pending, spec, path, deadline, actors)
            t1 = time.perf_counter()
            try:
                plan = ray.get(idle[0].plan.remote(*where, values))
            except Exception as exc:  # noqa: BLE001 - the family's own error, raised here as it is
                raise _unwrap(ray, exc) from None
            todo = kind.prepare(path, plan, bool(run_args.get("overwrite")))
            t2 = time.perf_counter()
            rows = kind.shard_rows(plan)
            spare = len(actors) - max(1, len(todo))   # fewer shards to do than workers: end the spare ones,
            if spare > 0:                              # those still loading first
                ends = [a for a in actors if a not in idle][:spare]
                ends += [a for a in idle[::-1] if a not in ends][:spare - len(ends)]
                self._end(ray, ends, key)
                actors = [a for a in actors if a not in ends]
                idle = [a for a in idle if a not in ends]
                pending = {r: a for r, a in pending.items() if a not in ends}
            # Workers get the plan without the whole data set (each job carries its own shard's data) and
            # without the list of finished shards (the driver's business), so a job's size does not grow.
            shared = {k: v for k, v in plan.items() if k != "args"}
            if isinstance(shared.get("manifest"), dict):
                shared["manifest"] = {k: v for k, v in shared["manifest"].items() if k != "shards"}
            queue, running, computed = deque(todo), {}, []
            n = rows[-1][1] if rows else 0
            bar = progress_bar(n, f"{kind.name} (ray)", run_args.get("progress"),
                               initial=n - sum(rows[k][1] - rows[k][0] for k in todo))

            def submit(actor: Any) -> None:
                k = queue.popleft()
                lo, hi = rows[k]
                job = Job(kind.name, spec.to_dict(), shared, k, kind.shard_args(plan["args"], lo, hi), path)
                running[actor.run.remote(job.to_dict(), where[1])] = (k, actor)

            try:
                for actor in idle:
                    if queue:
                        submit(actor)
                while running or (queue and pending):
                    done, _ = ray.wait(list(running) + list(pending), num_returns=1)
                    if done[0] in pending:   # a worker finished loading: it takes the next shard
                        for actor in self._ready(ray, pending, spec, path, deadline, actors):
                            if queue:
                                submit(actor)
                        continue
                    k, actor = running.pop(done[0])
                    try:
                        entry = ray.get(done[0])
                    except Exception as exc:  # noqa: BLE001
                        raise _unwrap(ray, exc) from None
                    kind.record(path, plan, k, entry)
                    computed.append(k)
                    bar.update(rows[k][1] - rows[k][0])
                    if queue:
                        submit(actor)
            finally:
                bar.close()
            t3 = time.perf_counter()
            if kind.finish_on_worker:   # finishing needs the model (mining's detailed examples)
                try:
                    store = ray.get(idle[0].finish.remote(*where, path, plan, sorted(computed)))
                except Exception as exc:  # noqa: BLE001
                    raise _unwrap(ray, exc) from None
        finally:
            self._end(ray, actors, None if self._discard else key)
            kind.release(path)
        if not kind.finish_on_worker:
            store = kind.finish(path, plan, sorted(computed))
        self.timings = {"start_workers": t1 - t0, "plan": t2 - t1, "shards": t3 - t2,
                        "finish": time.perf_counter() - t3}
        return store

    def _end(self, ray: Any, actors: list[Any], key: str | None) -> None:
        """Keep ``actors`` for the next job on the same model (``keep_workers``), or end them."""
        if self.keep_workers and key is not None:
            self._pool.setdefault(key, []).extend(actors)
            return
        for a in actors:
            ray.kill(a)

    def release(self) -> None:
        """End the actors kept for later jobs (``keep_workers=True``), freeing their CPUs."""
        ray = _import_ray()
        pool, self._pool = self._pool, {}
        if ray.is_initialized():
            for actors in pool.values():
                for a in actors:
                    ray.kill(a)

    def shutdown(self) -> None:
        """Disconnect from (or stop the local) cluster."""
        self.release()
        ray = _import_ray()
        if ray.is_initialized():
            ray.shutdown()


__all__ = ["RayEngine", "Worker"]
