"""JSON schemas of the registered methods' options and the app's OpenAPI document, from the registry.

Each option's schema is read from its type annotation (``int``, ``float``, ``bool``, ``str``,
``X | None``, ``Sequence[int]``, ``tuple[float, ...]``...) and its default; an annotation
that has no JSON form (a probe object, ``Any``) gives an unconstrained schema, entered as
JSON in the page. Options that name a file (``path``) are not offered: a request never
reaches the file system outside the data folder.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..registry import REQUIRED, Method, methods

SIMPLE = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
# Options that would make the server read or write a file named by the request.
HIDDEN_OPTIONS = frozenset({"path"})
TARGET_KINDS = ("NextToken", "Contrast", "Continuation", "Label")


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return [p for p in parts if p]


def annotation_schema(annotation: str) -> dict[str, Any]:
    """The JSON schema of a type annotation written as text.

    Example:
        >>> annotation_schema("int | None")
        {'type': ['integer', 'null']}
        >>> annotation_schema("Sequence[int] | None")
        {'anyOf': [{'type': 'array', 'items': {'type': 'integer'}}, {'type': 'null'}]}
        >>> annotation_schema("tuple[float, ...]")
        {'type': 'array', 'items': {'type': 'number'}}
    """
    parts = _split_top(annotation.replace("Optional[", "").rstrip("]") if annotation.startswith("Optional[")
                       else annotation, "|")
    nullable = "None" in parts
    parts = [p for p in parts if p != "None"]
    schemas = []
    for p in parts:
        if p in SIMPLE:
            schemas.append({"type": SIMPLE[p]})
            continue
        m = re.fullmatch(r"(?:Sequence|list|tuple|List|Tuple)\[(.*)\]", p)
        if m:
            inner = _split_top(m.group(1), ",")
            inner = [x for x in inner if x != "..."]
            item = annotation_schema(inner[0]) if len(set(inner)) == 1 else {}
            schemas.append({"type": "array", "items": item})
            continue
        return {}  # a type with no JSON form: any JSON value
    if all(set(s) == {"type"} for s in schemas):
        types = [s["type"] for s in schemas] + (["null"] if nullable else [])
        return {"type": types[0] if len(types) == 1 else types}
    schemas += [{"type": "null"}] if nullable else []
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def plain_default(value: Any) -> Any:
    """A default value as JSON (tuples become lists; non-finite floats and objects become their text)."""
    if isinstance(value, (list, tuple)):
        return [plain_default(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_default(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def options_schema(m: Method) -> dict[str, Any]:
    """The JSON schema of ``m``'s options object (the ones a request may set)."""
    props, required = {}, []
    for o in m.options.values():
        if o.name in HIDDEN_OPTIONS or o.name == "progress":
            continue
        s = dict(annotation_schema(o.annotation))
        s["x-annotation"] = o.annotation
        if o.default is REQUIRED:
            required.append(o.name)
        else:
            s["default"] = plain_default(o.default)
        props[o.name] = s
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def method_info(m: Method) -> dict[str, Any]:
    """What the page needs to build a method's form: inputs, target, options, check."""
    return {"name": m.name, "verb": m.verb, "family": m.family, "takes": m.takes, "inputs": list(m.inputs),
            "target": m.target, "summary": m.summary, "builds_input": m.cli_input is not None,
            "check": None if m.check is None else {"name": m.check.name, "threshold": m.check.threshold,
                                                   "higher_is_better": m.check.higher_is_better},
            "options": options_schema(m)}


def check_value(name: str, schema: dict[str, Any], value: Any) -> str | None:
    """Why ``value`` does not fit ``schema`` (``None`` when it does). Checks types only, one level deep."""
    if "anyOf" in schema:
        return None if any(check_value(name, s, value) is None for s in schema["anyOf"]) else \
            f"option {name!r} must be one of {[s.get('type') for s in schema['anyOf']]}, not {value!r}"
    t = schema.get("type")
    if t is None:
        return None
    types = t if isinstance(t, list) else [t]
    ok = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "boolean": lambda v: isinstance(v, bool), "string": lambda v: isinstance(v, str),
          "null": lambda v: v is None, "array": lambda v: isinstance(v, list)}
    if not any(ok[x](value) for x in types):
        return f"option {name!r} must be {' or '.join(types)}, not {value!r}"
    if isinstance(value, list) and schema.get("items"):
        bad = [check_value(f"{name}[{i}]", schema["items"], v) for i, v in enumerate(value)]
        return next((b for b in bad if b), None)
    return None


def openapi(title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app: its paths and one run schema per registered method."""
    target = {"type": "object", "required": ["kind"],
              "properties": {"kind": {"enum": list(TARGET_KINDS)}},
              "description": "A target as Target.to_dict gives it: {'kind': 'NextToken', 'token': ' Mary'}, "
                             "{'kind': 'Contrast', 'a': ' Mary', 'b': ' John'}, {'kind': 'Continuation', 'text': ...}, "
                             "{'kind': 'Label', 'label': ..., 'verbalizers': {...}}."}
    runs = {}
    for m in methods():
        runs[f"Run_{m.name}"] = {
            "type": "object", "required": ["method"],
            "properties": {"method": {"const": m.name}, "model": {"type": "string"},
                           "prompt": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                           "clean": {"type": "string"}, "corrupted": {"type": "string"},
                           "dataset": {"type": "string"}, "n": {"type": "integer"}, "task": {"type": "string"},
                           "result": {"type": "string"}, "target": {"$ref": "#/components/schemas/Target"},
                           "options": options_schema(m)},
            "description": f"{m.verb} / {m.name} (takes {m.takes}): {m.summary}"}
    job = {"type": "object", "properties": {k: {} for k in ("id", "method", "model", "state", "done", "total", "desc",
                                                          "results", "error", "compute_s")}}

    def op(summary: str, ok: str = "OK", body: Any = None, errors: tuple[int, ...] = ()) -> dict[str, Any]:
        o: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": ok}}}
        for code in errors:
            o["responses"][str(code)] = {"description": {400: "bad request", 404: "not found", 413: "too large",
                                                          422: "invalid input", 429: "queue full"}[code]}
        if body is not None:
            o["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        return o

    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    jid = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0", "info": {"title": title, "version": version},
        "paths": {
            "/api/methods": {"get": op("Every registered method with its options' schema")},
            "/api/models": {"get": op("The models this server serves")},
            "/api/jobs": {"post": op("Run a method as a job", "the queued job",
                                     {"oneOf": [{"$ref": f"#/components/schemas/{k}"} for k in runs]},
                                     (400, 404, 413, 422, 429)),
                          "get": op("The jobs the server remembers")},
            "/api/jobs/{job_id}": {"get": {**op("One job", errors=(404,)), "parameters": [jid]}},
            "/api/jobs/{job_id}/events": {"get": {**op("The job's progress as server-sent events", errors=(404,)),
                                                  "parameters": [jid]}},
            "/api/jobs/{job_id}/cancel": {"post": {**op("Cancel a job", errors=(404,)), "parameters": [jid]}},
            "/api/results": {"get": op("Saved results in the data folder")},
            "/api/results/{name}": {"get": {**op("One saved result's rendered view", errors=(400, 404)),
                                            "parameters": [name]}},
            "/api/results/{name}/data": {"get": {**op("One saved result as Result.to_dict", errors=(400, 404)),
                                                 "parameters": [name]}},
            "/api/results/{name}/download": {"get": {**op("The result's files (JSON + safetensors) as a zip",
                                                          errors=(400, 404)), "parameters": [name]}},
            "/api/results/{name}/report": {"get": {**op("The result's self-contained HTML report",
                                                        errors=(400, 404)), "parameters": [name]}},
        },
        "components": {"schemas": {"Target": target, "Job": job, **runs}},
    }
