"""The app's ASGI server (Starlette): JSON endpoints, progress streams, saved results, the page.

:func:`create_app` builds the application around a set of models (each loaded once, one
handle shared by every request) and a data folder; :func:`serve` runs it with uvicorn.
Every view is drawn by :func:`interpretlm.viz.render` from the result's figure payloads,
the same renderers as the HTML reports. Limits (:class:`Limits`) bound the request size,
the prompts, the queued and running jobs and a job's time; names of saved results are
checked so that no request reaches a file outside the data folder. Results are read
with :meth:`interpretlm.Result.load` (JSON and safetensors, never pickle).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import re
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import InterpretLMError
from ..registry import UnknownMethodError, call, check_options, method, methods
from ..results import Result
from ..targets import Target
from ..units import parse_unit
from ..viz import Table, render
from ..viz.html import CSS, subject
from . import schema
from .jobs import TERMINAL, Job, JobQueue, QueueFull

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,150}\.json")
SPEC = re.compile(r"[A-Za-z0-9_]{1,64}")  # a built-in data set or task name; never a file
STATIC = ("index.html", "app.js", "app.css")
VIZ_STATIC = ("attention.js", "attention.css")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


@dataclass(frozen=True)
class Limits:
    """What one server accepts.

    Attributes:
        max_body: bytes of a request body (more: 413).
        max_prompt_chars: characters of one prompt or target string (more: 422).
        max_prompts: prompts in one request (more: 422).
        max_examples: examples built from a data set or task name (``n``; more: 422).
        max_queued: jobs waiting (more: 429).
        workers: jobs running at once.
        max_job_seconds: a running job is stopped at its next progress step after this long.
        max_streams: progress streams open at once (more: 429).
    """

    max_body: int = 64 * 1024
    max_prompt_chars: int = 2000
    max_prompts: int = 64
    max_examples: int = 256
    max_queued: int = 8
    workers: int = 1
    max_job_seconds: float = 600.0
    max_streams: int = 64


class Models:
    """The served models by name, each loaded once on first use and shared (one handle per model)."""

    def __init__(self, models: dict[str, Any]) -> None:
        self._specs = dict(models)
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self._specs)

    def default(self) -> str:
        return next(iter(self._specs))

    def loaded(self, name: str) -> bool:
        return name in self._handles

    def get(self, name: str) -> Any:
        if name not in self._specs:
            raise KeyError(name)
        with self._lock:
            if name not in self._handles:
                spec = self._specs[name]
                if isinstance(spec, str):
                    import interpretlm

                    spec = interpretlm.load(spec)
                elif callable(spec) and not hasattr(spec, "forward"):
                    spec = spec()
                self._handles[name] = spec
            return self._handles[name]


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_body`` bytes with 413 (declared or streamed)."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await _send_json(send, 413, {"error": f"request body over {self.max_body} bytes"})
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413, f"request body over {self.max_body} bytes")
            return msg
        await self.app(scope, limited, send)


class SecurityHeaders:
    """ASGI middleware: a strict content security policy (no inline or foreign script) on every answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        async def with_headers(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = list(msg.get("headers", [])) + [
                    (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
            await send(msg)
        await self.app(scope, receive, with_headers)


async def _send_json(send: Callable, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Store:
    """The data folder: saved results by file name, never a path outside it; views cached by mtime."""

    def __init__(self, root: Path, cache_size: int = 64) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._views: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._meta: dict[tuple[str, int], dict[str, Any]] = {}
        self.cache_size = cache_size
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        """The file of result ``name`` (a bare ``*.json`` name); ValueError for anything else."""
        if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"not the name of a saved result: {name!r} (a file name ending in .json, "
                             "letters, digits, '_', '-' and '.' only)")
        p = (self.root / name).resolve()
        if p.parent != self.root:
            raise ValueError(f"{name!r} is not in the data folder")
        return p

    def load(self, name: str) -> Result:
        p = self.path(name)
        if not p.is_file():
            raise FileNotFoundError(name)
        return Result.load(p)

    def save(self, result: Result, name: str) -> str:
        result.save(self.path(name))
        return name

    def list(self, limit: int = 500) -> list[dict[str, Any]]:
        files = sorted((p for p in self.root.glob("*.json") if NAME.fullmatch(p.name) and p.resolve().parent == self.root),
                       key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
        out = []
        live = {(p.name, p.stat().st_mtime_ns) for p in files}
        for key in [k for k in self._meta if k not in live]:  # files removed or rewritten since
            del self._meta[key]
        for p in files:
            key = (p.name, p.stat().st_mtime_ns)
            meta = self._meta.get(key)
            if meta is None:
                try:
                    doc = json.loads(p.read_text(encoding="utf-8"))
                    f = doc["fields"]
                    chk = f.get("check") if isinstance(f.get("check"), dict) else None
                    meta = {"name": p.name, "kind": str(doc["interpretlm_result"]).rpartition(".")[2],
                            "method": f.get("method", ""), "model": f.get("model", ""),
                            "inputs": _short(f.get("inputs")), "check": None if chk is None else chk.get("name"),
                            "mtime": p.stat().st_mtime}
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    continue  # not a saved result: not listed
                self._meta[key] = meta
            out.append(meta)
        return out

    def view(self, name: str) -> dict[str, Any]:
        """The rendered view of result ``name`` (cached until its file changes)."""
        p = self.path(name)
        if not p.is_file():
            raise FileNotFoundError(name)
        key = (name, p.stat().st_mtime_ns)
        with self._lock:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
        v = view_of(self.load(name), name)
        with self._lock:
            self._views[key] = v
            while len(self._views) > self.cache_size:
                self._views.popitem(last=False)
        return v


def _short(inputs: Any, n: int = 80) -> str:
    text = inputs if isinstance(inputs, str) else json.dumps(inputs)[:200] if inputs is not None else ""
    return text if len(text) <= n else text[: n - 1] + "…"


def view_of(result: Result, name: str = "") -> dict[str, Any]:
    """A result's view: its header, each figure drawn by :func:`interpretlm.viz.render`, warnings, diagnostics."""
    prompt = getattr(result, "prompt", None)
    if prompt is None:
        prompt = result.inputs
    figures = [{"name": k, "kind": type(f).__name__, "html": render(f)} for k, f in result.figures().items()]
    extra = []
    if result.warnings:
        extra.append(render(Table(["warning", "message"], [(w["category"], w["message"]) for w in result.warnings],
                                  title="Warnings")))
    if result.diagnostics:
        extra.append(render(Table(["figure", "value"], [(k, v if isinstance(v, (int, float, str)) else json.dumps(
            schema.plain_default(v))) for k, v in result.diagnostics.items()], title="Diagnostics")))
    return {"name": name, "title": result.title(), "summary": result.summary(), "method": result.method,
            "model": result.model, "kind": type(result).__name__,
            "check": None if result.check is None else result.check.to_dict(),
            "subject_html": subject(model=result.model or "", prompt=prompt, target=result.target, check=result.check),
            "figures": figures, "diagnostics_html": "".join(extra)}


def _static(package: str, name: str) -> str:
    return resources.files(package).joinpath("static", name).read_text(encoding="utf-8")


def create_app(models: dict[str, Any], data_dir: str | Path, limits: Limits | None = None) -> Starlette:
    """The app: ``models`` maps a name to a loaded :class:`~interpretlm.LM`, a name or path for
    :func:`interpretlm.load` (loaded on first use) or a function returning an LM.

    Example:
        >>> from starlette.testclient import TestClient
        >>> from interpretlm.testing import tiny_lm
        >>> import tempfile
        >>> app = create_app({"tiny": tiny_lm("llama")}, tempfile.mkdtemp())
        >>> with TestClient(app) as client:
        ...     "saliency" in [m["name"] for m in client.get("/api/methods").json()["methods"]]
        True
    """
    from .. import __version__

    limits = limits or Limits()
    if not models:
        raise InterpretLMError("create_app needs at least one model")
    served = Models(models)
    store = Store(Path(data_dir))
    jobs = JobQueue(max_queued=limits.max_queued, workers=limits.workers, max_seconds=limits.max_job_seconds)
    streams = {"open": 0}
    listing = {m.name: schema.method_info(m) for m in methods()}
    api_doc = schema.openapi("interpretlm app", __version__)
    statics = {n: _static("interpretlm.app", n) for n in STATIC}
    viz_statics = {n: _static("interpretlm.viz", n) for n in VIZ_STATIC}

    # ------------------------------------------------------------ building a job from a request
    def text(value: Any, what: str) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{what} must be a string")
        if len(value) > limits.max_prompt_chars:
            raise ValueError(f"{what} is {len(value)} characters; the limit is {limits.max_prompt_chars}")
        return value

    def target_of(spec: Any) -> Target | None:
        if spec is None:
            return None
        if not isinstance(spec, dict) or spec.get("kind") not in schema.TARGET_KINDS:
            raise ValueError(f"target must be an object with a kind among {', '.join(schema.TARGET_KINDS)}")
        for k, v in spec.items():  # token strings and continuations obey the prompt limit too
            if isinstance(v, str):
                text(v, f"target.{k}")
        if len(json.dumps(spec)) > limits.max_prompt_chars * 4:
            raise ValueError("target is too large")
        return Target.from_dict(spec)

    def spec_word(value: Any, what: str) -> str:
        if not isinstance(value, str) or not SPEC.fullmatch(value):
            raise ValueError(f"{what} must be a built-in name (letters, digits, '_'), not {value!r}")
        return value

    def build(body: dict[str, Any]) -> Job:
        m = method(str(body.get("method", "")))
        model_name = body.get("model") or served.default()
        if model_name not in served.names():
            raise LookupError(f"model {model_name!r} is not served here; served: {', '.join(served.names())}")
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError("options must be an object")
        props = listing[m.name]["options"]["properties"]
        hidden = [k for k in options if k not in props and k in m.options]
        if hidden:
            raise ValueError(f"option(s) {', '.join(hidden)} cannot be set from the app")
        check_options(m, options)
        for k, v in options.items():
            why = schema.check_value(k, props[k], v)
            if why:
                raise ValueError(why)
        tgt = target_of(body.get("target"))
        if m.target == "required" and tgt is None and m.takes != "pairs":
            raise ValueError(f"{m.name} needs a target")
        n = body.get("n", 16)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= limits.max_examples:
            raise ValueError(f"n must be an integer from 1 to {limits.max_examples}")

        def prompts(value: Any, what: str) -> list[str]:
            items = value if isinstance(value, list) else [value]
            if not items or len(items) > limits.max_prompts:
                raise ValueError(f"{what}: give 1 to {limits.max_prompts} prompts")
            return [text(v, what) for v in items]

        if m.takes in ("prompt", "item"):  # an item (a question...) is given by its text, like a prompt
            given = body.get("prompt")
            ps = prompts(given, "prompt")
            make_inputs: Callable[[Any], tuple[list[Any], Any]] = \
                lambda lm: ([ps if isinstance(given, list) else ps[0]], None)
        elif m.takes == "dataset":
            ps = prompts(body.get("prompts", body.get("prompt")), "prompts")
            make_inputs = lambda lm: ([ps], None)  # noqa: E731
        elif m.takes == "result":
            saved = body.get("result")
            store.path(saved)  # the name is checked now; the file is read in the job
            make_inputs = lambda lm: ([store.load(saved)], None)  # noqa: E731
        elif m.takes in ("pairs", "task"):
            word = body.get("dataset") if m.takes == "pairs" else body.get("task")
            if m.takes == "pairs" and word is None:
                if m.inputs != ("clean", "corrupted"):
                    raise ValueError(f"{m.name} takes a data set: give 'dataset' (a built-in name)")
                clean, corrupted = text(body.get("clean"), "clean"), text(body.get("corrupted"), "corrupted")
                if tgt is None:
                    raise ValueError(f"{m.name} needs a target for a single clean / corrupted pair")
                make_inputs = lambda lm: ([clean, corrupted], None)  # noqa: E731
            else:
                word = spec_word(word, "dataset" if m.takes == "pairs" else "task")
                if m.cli_input is None:
                    raise ValueError(f"{m.name} cannot build its input from a name")
                module, _, fn = m.cli_input.partition(":")

                def make_inputs(lm: Any, word: str = word) -> tuple[list[Any], Any]:
                    obj = getattr(importlib.import_module(module), fn)(word, lm, n=n)
                    if m.inputs == ("clean", "corrupted"):
                        return [obj.clean, obj.corrupted], getattr(obj, "target", None)
                    return [obj], None
        elif m.takes == "unit":  # COMPONENT INDEX (or COMPONENT all), as on the command line
            word = text(body.get("unit", body.get("prompt")), "unit")
            if m.cli_input:   # the method reads more kinds of unit (a dictionary's folder and a feature)
                module, _, fn = m.cli_input.partition(":")

                def make_inputs(lm: Any, word: str = word) -> tuple[list[Any], Any]:
                    return [getattr(importlib.import_module(module), fn)(word, lm)], None
            else:
                try:
                    unit = parse_unit(word)
                except InterpretLMError as exc:  # a malformed unit is a bad request, not a missing resource
                    raise ValueError(str(exc).strip("'\"")) from None
                make_inputs = lambda lm: ([unit], None)  # noqa: E731
        else:
            raise ValueError(f"{m.name} takes {m.takes}, which the app cannot build")

        def run(job: Job) -> list[str]:
            lm = served.get(model_name)
            inputs, carried = make_inputs(lm)
            target = tgt if tgt is not None else carried
            args = inputs + ([target] if target is not None and m.target != "none" else [])
            out = call(m.name, lm, *args, progress=False, **options)
            results = out if isinstance(out, list) else [out]
            names = []
            for i, r in enumerate(results):
                name = f"{job.id}-{m.name}" + (f"-{i}" if len(results) > 1 else "") + ".json"
                names.append(store.save(r, name))
            return names

        return Job(method=m.name, model=model_name, run=run)

    # ------------------------------------------------------------ endpoints
    async def index(request: Request) -> Response:
        return HTMLResponse(statics["index.html"])

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name in statics and name != "index.html":
            kind = "text/css" if name.endswith(".css") else "text/javascript"
            return Response(statics[name], media_type=kind, headers={"cache-control": "no-cache"})
        if name == "il.css":
            return Response(CSS, media_type="text/css")
        raise HTTPException(404)

    async def viz_static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in viz_statics:
            raise HTTPException(404)
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return Response(viz_statics[name], media_type=kind)

    async def list_methods(request: Request) -> Response:
        return JSONResponse({"methods": list(listing.values()), "target_kinds": list(schema.TARGET_KINDS)})

    async def list_models(request: Request) -> Response:
        return JSONResponse({"models": [{"name": n, "loaded": served.loaded(n)} for n in served.names()],
                             "default": served.default()})

    async def openapi_doc(request: Request) -> Response:
        return JSONResponse(api_doc)

    async def submit(request: Request) -> Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting deeper than json parses
            return _error(400, "the body must be a JSON object")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        try:
            job = build(body)
        except UnknownMethodError as exc:
            return _error(404, str(exc))
        except LookupError as exc:
            return _error(404, str(exc).strip("'\""))
        except (ValueError, TypeError, RecursionError, InterpretLMError) as exc:
            return _error(422, str(exc))
        try:
            jobs.submit(job)
        except QueueFull as exc:
            return JSONResponse({"error": str(exc)}, status_code=429, headers={"retry-after": "2"})
        return JSONResponse(job.to_dict(), status_code=202)

    def job_of(request: Request) -> Job:
        job = jobs.jobs.get(request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, "no such job")
        return job

    async def list_jobs(request: Request) -> Response:
        return JSONResponse({"jobs": [j.to_dict() for j in list(jobs.jobs.values())][-50:], "counts": jobs.counts()})

    async def get_job(request: Request) -> Response:
        return JSONResponse(job_of(request).to_dict())

    async def cancel_job(request: Request) -> Response:
        return JSONResponse(jobs.cancel(job_of(request).id).to_dict())

    async def events(request: Request) -> Response:
        job = job_of(request)
        if streams["open"] >= limits.max_streams:
            return _error(429, f"{limits.max_streams} progress streams are open already")
        streams["open"] += 1

        async def stream():
            # woken by the job itself on every change (no polling delay). A client that goes away
            # is noticed by Starlette, which cancels this generator (the finally clause still runs);
            # asking request.is_disconnected() here as well would race with that listener.
            wake = asyncio.Event()
            watcher = (asyncio.get_running_loop(), wake)
            job.watchers.append(watcher)
            try:
                seen = -1
                while True:
                    wake.clear()
                    if job.version != seen:
                        # the snapshot decides the end, not the live job: a job that finishes between
                        # the two reads would otherwise end the stream before its last state is sent
                        seen = job.version
                        snapshot = job.to_dict()
                        yield f"event: job\ndata: {json.dumps(snapshot)}\n\n"
                        if snapshot["state"] in TERMINAL:
                            break
                    try:
                        await asyncio.wait_for(wake.wait(), 1.0)
                    except asyncio.TimeoutError:
                        pass
            finally:
                job.watchers.remove(watcher)
                streams["open"] -= 1
        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    async def list_results(request: Request) -> Response:
        items = await asyncio.to_thread(store.list)
        return JSONResponse({"results": items})

    async def _guarded(request: Request, fn: Callable[[str], Any]) -> Any:
        name = request.path_params["name"]
        try:
            return await asyncio.to_thread(fn, name)
        except InterpretLMError as exc:  # a file that is not a result this version can read
            raise HTTPException(422, str(exc)) from exc
        except ValueError as exc:  # a name that is not a file of the data folder
            raise HTTPException(400, str(exc)) from exc
        except FileNotFoundError as exc:
            raise HTTPException(404, f"no saved result {name!r}") from exc

    async def result_view(request: Request) -> Response:
        t0 = time.perf_counter()
        v = await _guarded(request, store.view)
        return JSONResponse(v, headers={"server-timing": f"view;dur={1000 * (time.perf_counter() - t0):.1f}"})

    async def result_data(request: Request) -> Response:
        return JSONResponse(schema.plain_default(await _guarded(request, lambda n: store.load(n).to_dict())))

    async def result_report(request: Request) -> Response:
        html = await _guarded(request, lambda n: store.load(n).to_html())
        # a report is a page of its own (inline styles and scripts): served as a download, not in the app
        name = request.path_params["name"].removesuffix(".json")
        return HTMLResponse(html, headers={"content-disposition": f'attachment; filename="{name}.html"'})

    async def result_download(request: Request) -> Response:
        def pack(name: str) -> bytes:
            p = store.path(name)
            if not p.is_file():
                raise FileNotFoundError(name)
            doc = json.loads(p.read_text(encoding="utf-8"))
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                z.write(p, p.name)
                arrays = doc.get("arrays")
                if arrays:
                    a = store.path(arrays.removesuffix(".safetensors") + ".json").with_suffix(".safetensors")
                    if a.is_file():
                        z.write(a, a.name)
            return buf.getvalue()
        data = await _guarded(request, pack)
        stem = request.path_params["name"].removesuffix(".json")
        return Response(data, media_type="application/zip",
                        headers={"content-disposition": f'attachment; filename="{stem}.zip"'})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await asyncio.to_thread(jobs.close)  # every job is cancelled; a running one stops at its next step

    routes = [
        Route("/", index), Route("/static/{name}", static), Route("/static/viz/{name}", viz_static),
        Route("/api/methods", list_methods), Route("/api/models", list_models), Route("/openapi.json", openapi_doc),
        Route("/api/jobs", submit, methods=["POST"]), Route("/api/jobs", list_jobs, methods=["GET"]),
        Route("/api/jobs/{job_id}", get_job), Route("/api/jobs/{job_id}/events", events),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/results", list_results), Route("/api/results/{name}", result_view),
        Route("/api/results/{name}/data", result_data), Route("/api/results/{name}/report", result_report),
        Route("/api/results/{name}/download", result_download),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    app.state.jobs, app.state.store, app.state.models, app.state.limits = jobs, store, served, limits
    app.add_middleware(BodyLimit, max_body=limits.max_body)
    app.add_middleware(SecurityHeaders)
    return app
