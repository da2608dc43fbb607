"""The app's bounded job queue: method calls run on worker threads, report progress, can be cancelled.

A job is one call of a registered method. At most ``max_queued`` jobs wait and at most
``workers`` run; :meth:`JobQueue.submit` refuses more with :class:`QueueFull` (the server
answers 429). Progress reaches the job through :func:`interpretlm.progress.listen`, which
sees every loop a method runs; the same callback raises :class:`JobCancelled` when the job
was cancelled or ran past ``max_seconds``, so a method stops at its next step.

Method calls are serialised by one lock, :data:`CALL_LOCK`: the registry records a
method's warnings with ``warnings.catch_warnings``, which swaps process-wide state, so two
calls at once on any threads could record each other's warnings (or lose them). With a
lock, extra workers only help a job that waits for a model to load.
"""

from __future__ import annotations

import itertools
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InterpretLMError
from ..progress import listen

CALL_LOCK = threading.Lock()
TERMINAL = ("done", "error", "cancelled")
_SEQ = itertools.count()


class QueueFull(InterpretLMError):
    """The queue holds ``max_queued`` waiting jobs already."""


class JobCancelled(InterpretLMError):
    """Raised inside a method's loop when its job was cancelled or ran out of time."""


@dataclass
class Job:
    """One method call and its state (``queued``, ``running``, ``done``, ``error``, ``cancelled``).

    ``run`` is ``fn(job) -> list[str]`` (the names of the saved results); ``version`` grows
    with every change, so a progress stream sends only news.
    """

    method: str
    model: str
    run: Callable[["Job"], list[str]]
    id: str = field(default_factory=lambda: f"{int(time.time())}-{next(_SEQ)}-{secrets.token_hex(3)}")
    state: str = "queued"
    done: int = 0
    total: int = 0
    desc: str = ""
    # every loop seen, as [description, done, total]; loops are told apart by description and length
    # (an inner loop may share its method's name with the loop over the prompts of a list)
    loops: list[list[Any]] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    error: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    compute_s: float | None = None
    version: int = 0
    cancel_requested: bool = False
    deadline: float | None = None
    # (event loop, asyncio.Event) of each progress stream following the job, woken on every change
    watchers: list[tuple[Any, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The job as plain data (what the API returns and the progress stream sends)."""
        return {"id": self.id, "method": self.method, "model": self.model, "state": self.state,
                "done": self.done, "total": self.total, "desc": self.desc, "loops": [list(x) for x in self.loops], "results": list(self.results),
                "error": self.error, "created": self.created, "started": self.started, "finished": self.finished,
                "compute_s": self.compute_s, "version": self.version}

    def _bump(self, **changes: Any) -> None:
        # the state goes last: a reader in another thread that sees a final state sees its results
        for k, v in sorted(changes.items(), key=lambda kv: kv[0] == "state"):
            setattr(self, k, v)
        self.version += 1
        for loop, event in list(self.watchers):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that stream's loop has closed
                pass

    def loop(self, desc: str, total: int) -> int | None:
        """Steps done by the loop called ``desc`` of ``total`` steps (``None``: not seen)."""
        return next((d for name, d, t in self.loops if name == desc and t == total), None)

    def progress(self, done: int, total: int, desc: str) -> None:
        """The progress listener: records the step, stops the method when cancelled or late."""
        if self.cancel_requested:
            raise JobCancelled(f"job {self.id} was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise JobCancelled(f"job {self.id} ran past the server's time limit per job")
        for loop in self.loops:
            if loop[0] == str(desc) and loop[2] == int(total):
                loop[1] = int(done)
                break
        else:
            self.loops.append([str(desc), int(done), int(total)])
        self._bump(done=int(done), total=int(total), desc=str(desc))


class JobQueue:
    """Worker threads over a bounded queue of :class:`Job`.

    Args:
        max_queued: jobs that may wait (more: :class:`QueueFull`).
        workers: jobs that may run at once (their method calls still take :data:`CALL_LOCK`).
        max_seconds: a running job is stopped at its next progress step after this long.
        keep: finished jobs remembered (the oldest are forgotten first).

    Example:
        >>> q = JobQueue(max_queued=2, workers=1)
        >>> job = q.submit(Job("demo", "none", run=lambda job: ["r.json"]))
        >>> q.wait(job.id, timeout=5).state, job.results
        ('done', ['r.json'])
        >>> q.close()
    """

    def __init__(self, max_queued: int = 8, workers: int = 1, max_seconds: float = 600.0, keep: int = 256) -> None:
        self.max_queued, self.workers, self.max_seconds, self.keep = max_queued, workers, max_seconds, keep
        self.jobs: dict[str, Job] = {}
        self._pending: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._threads = [threading.Thread(target=self._work, name=f"interpretlm-app-worker-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, job: Job) -> Job:
        """Queue ``job``; raises :class:`QueueFull` when ``max_queued`` jobs wait already."""
        with self._lock:
            if self._waiting >= self.max_queued:
                raise QueueFull(f"{self._waiting} jobs are waiting already (the limit is {self.max_queued}); "
                                "try again when one has finished.")
            self._waiting += 1
            self.jobs[job.id] = job
            self._forget_old()
        self._pending.put(job)
        return job

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued job never starts; a running one stops at its next step."""
        job = self.jobs[job_id]
        if job.state not in TERMINAL:
            job.cancel_requested = True
            if job.state == "queued":
                job._bump(state="cancelled", finished=time.time())
            else:
                job._bump()
        return job

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        out: dict[str, int] = {}
        for j in list(self.jobs.values()):
            out[j.state] = out.get(j.state, 0) + 1
        return out

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job is finished (for tests and scripts)."""
        end = time.monotonic() + timeout
        job = self.jobs[job_id]
        while job.state not in TERMINAL and time.monotonic() < end:
            time.sleep(0.01)
        return job

    def close(self) -> None:
        """Cancel every job (a running one stops at its next step) and stop the workers."""
        for j in list(self.jobs.values()):
            self.cancel(j.id)
        for _ in self._threads:
            self._pending.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def _forget_old(self) -> None:
        done = [j for j in self.jobs.values() if j.state in TERMINAL]
        for j in sorted(done, key=lambda j: j.created)[: max(0, len(self.jobs) - self.keep)]:
            del self.jobs[j.id]

    def _work(self) -> None:
        while True:
            job = self._pending.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
            if job.state == "cancelled":
                continue
            job.deadline = time.monotonic() + self.max_seconds
            job._bump(state="running", started=time.time())
            try:
                with CALL_LOCK, listen(job.progress):
                    t0 = time.perf_counter()
                    names = job.run(job)
                    job.compute_s = time.perf_counter() - t0
                if job.cancel_requested:  # a method without loops finished before it saw the request
                    job._bump(state="cancelled", finished=time.time())
                else:
                    job._bump(state="done", results=names, finished=time.time())
            except JobCancelled as exc:
                job._bump(state="cancelled", error=str(exc), finished=time.time())
            except Exception as exc:  # the job reports every failure; the worker lives on
                job._bump(state="error", error=f"{type(exc).__name__}: {exc}", finished=time.time())
