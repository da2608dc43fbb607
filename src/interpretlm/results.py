"""The result base class: every method returns a :class:`Result`.

A result is a dataclass holding the tokens, the numbers, the method and target it came
from, and its own diagnostics (passes used, convergence or conservation errors). Every
result

* saves and loads: ``r.save("r.json")`` writes the metadata as JSON and its arrays
  (tensors and NumPy arrays, at any depth of lists and dicts) to ``r.safetensors``
  beside it; ``il.Result.load("r.json")`` gives back an object of the same class;
* renders: ``r.to_html()`` is one self-contained page that works offline, and
  ``_repr_html_`` shows it in notebooks.

Subclasses expose their pictures as payloads in ``figures()`` (drawn in order by the
shared renderers of :mod:`interpretlm.viz`; ``_html_body`` may add text around them)
and, when they have a headline number, ``summary``.

Every result also records where it came from (method, options, target, input ids, the
model's name and weight fingerprint, the library version: enough for ``il.rerun``), its
check figure (:class:`Check`) and the warnings raised while it was computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .errors import InterpretLMWarning, ResultFormatError
from .viz import html as H
from .viz.figures import Figure, Table, Text
from .viz.render import render, render_all

# values that hold no float (ints and bools cannot be NaN or inf): the non-finite scan skips them
_NO_NUMBERS = (str, int, type(None))
_ATOMS = frozenset({str, int, bool, type(None)})   # the same, by exact type (a set lookup: lists of 46,080 records)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Check:
    """The figure that says whether a result can be trusted.

    Attributes:
        name: what is measured (``"completeness_error"``, ``"conservation_error"``...).
        value: the measured value (``None`` when it could not be measured).
        threshold: the limit the value must stay under (or above, with ``higher_is_better``).
        passed: whether it does (``None`` when there is no value).
        higher_is_better: ``True`` for figures such as selectivity or recovered fraction.
    """

    name: str
    value: float | None
    threshold: float
    higher_is_better: bool = False

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        if not np.isfinite(self.value):  # a NaN or inf figure is a failure, never "not measured"
            return False
        return bool(self.value >= self.threshold) if self.higher_is_better else bool(self.value <= self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "threshold": self.threshold,
                "higher_is_better": self.higher_is_better, "passed": self.passed}

    def __str__(self) -> str:
        if self.value is None:
            return f"{self.name}: not measured"
        sign = ">=" if self.higher_is_better else "<="
        verdict = "passed" if self.passed else "FAILED"
        return f"{self.name} {self.value:.4g} ({verdict}: must be {sign} {self.threshold:g})"


def _to_jsonable(value: Any, key: str, arrays: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, Check):
        return {"__check__": True, **{k: _to_jsonable(v, key, arrays) for k, v in value.to_dict().items()
                                      if k != "passed"}}
    if isinstance(value, torch.Tensor):
        arrays[key] = value.detach().cpu().contiguous().clone()
        return {"__array__": key, "lib": "torch"}
    if isinstance(value, np.ndarray):
        arrays[key] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"__array__": key, "lib": "numpy"}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v, f"{key}.{k}", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ResultFormatError(f"Cannot save a value of type {type(value).__name__} at {key!r}; "
                            "results hold numbers, strings, lists, dicts, tensors and arrays.")


def _from_jsonable(value: Any, arrays: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            t = arrays[value["__array__"]]
            return t.numpy() if value.get("lib") == "numpy" else t
        if "__float__" in value:
            return float(value["__float__"])
        if value.get("__check__"):
            return Check(value["name"], _from_jsonable(value["value"], arrays), value["threshold"],
                         value.get("higher_is_better", False))
        return {k: _from_jsonable(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v, arrays) for v in value]
    return value


def atomic_write(path: Path, write) -> None:
    """Write ``path`` through ``write(tmp_path)`` and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_of(path: Path) -> str:
    """The full sha256 of a file, read in 4 MiB chunks (a file of any size in bounded memory).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
        >>> sha256_of(p)[:12]
        'ba7816bf8f01'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(kw_only=True)
class Result:
    """Base class of every result.

    Attributes:
        model: the model's name.
        method: the method that produced the result (a registered name, e.g. ``"integrated_gradients"``).
        target: the explained target, as a dict (``Target.to_dict()``; ``Target.from_dict`` rebuilds it).
        policy: how the inputs were tokenized (BOS/EOS, chat template).
        diagnostics: the result's own costs and figures, e.g. ``forward_passes``,
            ``backward_passes``, ``completeness_error``.
        options: the options the method ran with (defaults filled in).
        inputs: the inputs as given, as plain data (a prompt, a list of prompts, token
            ids, a task's description), so the method can be rerun.
        input_ids: the token ids of the explained input (``[pos]``) for prompt methods.
        model_fingerprint: a hash of the model's weights (``LM.fingerprint``).
        version: the interpretlm version that produced the result.
        check: the figure that checks the result (:class:`Check`).
        warnings: the warnings emitted while computing it (``{"category", "message"}``).
    """

    model: str = ""
    method: str = ""
    target: dict[str, Any] | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    inputs: Any = None
    input_ids: Any = field(default_factory=list)
    model_fingerprint: str = ""
    version: str = ""
    check: Check | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)

    _registry: ClassVar[dict[str, type["Result"]]] = {}
    # Dotted paths (``"scores"``, ``"diagnostics.r2"``) where NaN is a documented "does not apply"
    # marker, so the registry's non-finite scan (``nonfinite``) does not take it for a failure.
    nan_marks: ClassVar[tuple[str, ...]] = ()
    # Provenance fields: plain data about the run, never figures of the result.
    _PROVENANCE: ClassVar[frozenset[str]] = frozenset({"model", "method", "target", "policy", "options", "inputs",
                                                        "input_ids", "model_fingerprint", "version", "check",
                                                        "warnings"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Result._registry[cls.qualified_kind()] = cls

    @classmethod
    def qualified_kind(cls) -> str:
        """The qualified name a saved result is filed under (``"interpretlm.attribution.result.Attribution"``)."""
        return f"{cls.__module__}.{cls.__qualname__}"

    # ---------------------------------------------------------------- warnings
    def warn(self, message: str, category: type[Warning] = InterpretLMWarning, stacklevel: int = 2) -> None:
        """Emit ``message`` as a warning and record it in :attr:`warnings` (saved with the result)."""
        import warnings

        self.warnings.append({"category": category.__name__, "message": str(message)})
        warnings.warn(message, category, stacklevel=stacklevel + 1)

    # ---------------------------------------------------------------- non-finite values
    def may_be_nan(self, path: str) -> bool:
        """Whether NaN at ``path`` (a dotted path of :meth:`nonfinite`) marks "does not apply"."""
        return any(path == p or path.startswith((p + ".", p + "[")) for p in self.nan_marks)

    def nonfinite(self) -> list[tuple[str, str]]:
        """Where the result's numbers hold NaN or inf: ``[(path, description), ...]``.

        Every field but the provenance is walked (tensors, arrays, floats, and lists and
        dicts of them, ``diagnostics`` included); NaN at a path of :attr:`nan_marks` is a
        documented marker and is skipped, inf never is.

        Example:
            >>> r = Result(diagnostics={"error": float("nan"), "ok": [1.0, 2.0]})
            >>> r.nonfinite()
            [('diagnostics.error', 'nan')]
        """
        found: list[tuple[str, str]] = []
        for f in dataclasses.fields(self):
            if f.name not in self._PROVENANCE:
                self._walk_nonfinite(getattr(self, f.name), f.name, found)
        return found

    def _walk_nonfinite(self, value: Any, path: str, found: list[tuple[str, str]]) -> None:
        if len(found) >= 20:  # enough to say where; a scan of a huge result stops early
            return
        if isinstance(value, (torch.Tensor, np.ndarray)):
            a = value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else value
            if a.dtype.kind not in "fc" or a.size == 0:
                return
            bad = ~np.isfinite(a)
            if self.may_be_nan(path):
                bad &= ~np.isnan(a)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                first = a[idx]
                where = f"[{', '.join(map(str, idx))}]" if a.ndim else ""
                found.append((path, f"{first} at {path}{where}; {int(bad.sum())} of {a.size} values non-finite"))
        elif isinstance(value, (float, np.floating)):
            v = float(value)
            if not np.isfinite(v) and not (np.isnan(v) and self.may_be_nan(path)):
                found.append((path, repr(v)))
        elif isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(v, _NO_NUMBERS):   # the path is built only where a number may hide
                    self._walk_nonfinite(v, f"{path}.{k}", found)
        elif isinstance(value, (list, tuple)):
            atoms = _ATOMS
            for i, v in enumerate(value):
                tv = type(v)
                if tv in atoms or (tv is dict and all(type(x) in atoms for x in v.values())):
                    continue   # nothing that could be NaN (a list of plain records: units, tokens...)
                if not isinstance(v, _NO_NUMBERS):
                    self._walk_nonfinite(v, f"{path}[{i}]", found)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the result: JSON metadata at ``path``, arrays in ``<path stem>.safetensors``.

        Both files are written atomically. Returns the JSON path.

        Example:
            >>> r.save("attribution.json"); il.Result.load("attribution.json")  # doctest: +SKIP
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix == ".safetensors":
            raise ResultFormatError("Give the JSON path (e.g. 'result.json'); arrays go beside it.")
        arrays: dict[str, torch.Tensor] = {}
        fields = {f.name: _to_jsonable(getattr(self, f.name), f.name, arrays)
                  for f in dataclasses.fields(self)}
        doc = {"interpretlm_result": self.qualified_kind(), "format": FORMAT_VERSION,
               "arrays": path.with_suffix(".safetensors").name if arrays else None, "fields": fields}
        if arrays:
            atomic_write(path.with_suffix(".safetensors"), lambda tmp: save_file(arrays, tmp))
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1, allow_nan=False)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Result":
        """Read a result written by :meth:`save`; returns an instance of the saved class."""
        from safetensors.torch import load_file

        path = Path(path)
        try:
            doc = json.loads(path.read_text())
            kind = doc["interpretlm_result"]
        except (OSError, ValueError, KeyError) as exc:
            raise ResultFormatError(f"{path} is not a saved interpretlm result: {exc}") from exc
        klass = result_class(kind, path)
        arrays = load_file(str(path.with_name(doc["arrays"]))) if doc.get("arrays") else {}
        fields = {k: _from_jsonable(v, arrays) for k, v in doc["fields"].items()}
        known = {f.name for f in dataclasses.fields(klass)}
        return klass(**{k: v for k, v in fields.items() if k in known})

    # ---------------------------------------------------------------- data
    def to_dict(self) -> dict[str, Any]:
        """Every field as plain Python (tensors and arrays become nested lists), JSON-able."""
        def plain(v: Any) -> Any:
            if isinstance(v, (torch.Tensor, np.ndarray)):
                return v.tolist()
            if isinstance(v, np.generic):
                return v.item()
            if isinstance(v, Check):
                return v.to_dict()
            if isinstance(v, dict):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v
        return {"result_kind": self.qualified_kind(), **{f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        """The result described by :meth:`to_dict` (arrays come back as lists)."""
        klass = result_class(d["result_kind"]) if "result_kind" in d else cls
        known = {f.name for f in dataclasses.fields(klass)}
        values = {k: v for k, v in d.items() if k in known}
        if isinstance(values.get("check"), dict):
            c = values["check"]
            values["check"] = Check(c["name"], c["value"], c["threshold"], c.get("higher_is_better", False))
        return klass(**values)

    def to_pandas(self, figure: str | None = None):
        """The result's numbers as a ``pandas.DataFrame``.

        Read from a figure payload (``figure``: its name in :meth:`figures`; default: the
        first one that holds a table of numbers): token shadings give ``token, value`` rows,
        heatmaps a rows × columns frame, bars and line charts one column per series, tables
        their rows. A result without such a figure gives its diagnostics, one row per figure.

        Example:
            >>> import interpretlm as il
            >>> from interpretlm.testing import tiny_lm
            >>> a = il.attribute(tiny_lm("llama"), "a b c", il.NextToken(5), method="saliency")
            >>> list(a.to_pandas().columns)
            ['token', 'saliency']
        """
        import pandas as pd

        figures = self.figures()
        names = [figure] if figure is not None else list(figures)
        for name in names:
            frame = _frame(figures[name]) if name in figures else None
            if frame is not None:
                return frame
        if figure is not None:
            raise ResultFormatError(f"{type(self).__name__} has no figure {figure!r} that holds numbers; "
                                    f"figures: {list(figures)}.")
        return pd.DataFrame({"value": pd.Series(self.diagnostics, dtype=object)})

    # ---------------------------------------------------------------- rendering
    def title(self) -> str:
        return f"{type(self).__name__}" + (f" — {self.method}" if self.method else "")

    def summary(self) -> str:
        """One line describing the result (shown under the title)."""
        t = self.target or {}
        return " · ".join(x for x in [f"model {self.model}" if self.model else "",
                                      f"target {t}" if t else ""] if x)

    def figures(self) -> dict[str, Figure]:
        """The result's pictures as named payloads (data, no HTML), in display order.

        :func:`interpretlm.viz.render` draws each; reports, the demo and the app compose
        them. Figures are derived from the result's fields, so they survive ``save`` /
        ``load``. Subclasses override this (default: none).

        Example:
            >>> r.figures()["scores"].to_dict()  # doctest: +SKIP
        """
        return {}

    def _html_body(self) -> str:
        figures = self.figures()
        if figures:
            return render_all(figures)
        rows = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (torch.Tensor, np.ndarray)):
                v = f"array {tuple(v.shape)}"
            rows.append((f.name, v))
        return H.table(["field", "value"], rows)

    def _subject_html(self) -> str:
        # the header every page starts with: model, prompt, target with its tokens, the check
        prompt = getattr(self, "prompt", None)
        if prompt is None:
            prompt = self.inputs
        return H.subject(model=self.model or "", prompt=prompt, target=self.target, check=self.check)

    def _diagnostics_html(self) -> str:
        parts = []
        if self.warnings:
            parts.append(render(Table(["warning", "message"], [(w["category"], w["message"]) for w in self.warnings],
                                      title="Warnings")))
        if self.diagnostics:
            parts.append(render(Table(["figure", "value"], list(self.diagnostics.items()), title="Diagnostics")))
        return "".join(parts)

    def to_html(self) -> str:
        """One self-contained HTML page (inline CSS/JS, escaped text, works offline)."""
        return H.page(self.title(), self._subject_html() + self._html_body() + self._diagnostics_html(),
                      subtitle=self.summary())

    def save_html(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_html` to ``path``."""
        path = Path(path)
        atomic_write(path, lambda tmp: Path(tmp).write_text(self.to_html(), encoding="utf-8"))
        return path

    def _repr_html_(self) -> str:
        return H.fragment(f"<h3>{H.escape(self.title())}</h3>" + self._subject_html() + self._html_body()
                          + self._diagnostics_html())


def _frame(fig: Figure):
    """A DataFrame of a figure payload's numbers, or ``None`` for pictures without a table (text, graphs)."""
    import pandas as pd

    from .viz import figures as F

    if isinstance(fig, F.TokenShading):
        return pd.DataFrame({"token": fig.tokens, fig.label or "value": fig.values})
    if isinstance(fig, F.Heatmap):
        return pd.DataFrame(fig.values, index=fig.rows, columns=fig.cols)
    if isinstance(fig, F.Bars):
        return pd.DataFrame(fig.series, index=pd.Index(fig.labels, name=fig.label_header or None))
    if isinstance(fig, F.LineChart):
        return pd.DataFrame(fig.series, index=pd.Index(fig.x, name=fig.x_label or None))
    if isinstance(fig, F.Table) and fig.rows:
        def cell(c: Any) -> Any:  # nested pictures become their number or text
            if isinstance(c, F.Bar):
                return c.value
            if isinstance(c, (F.TokenStrip, F.TokenShading)):
                return "".join(c.tokens)
            if isinstance(c, F.Text):
                return c.text
            return c.kind if isinstance(c, F.Figure) else c
        return pd.DataFrame([[cell(c) for c in r] for r in fig.rows], columns=fig.header)
    return None


def result_class(kind: str, where: Any = "the file") -> type[Result]:
    """The :class:`Result` subclass filed under ``kind``, importing its interpretlm module if needed.

    Older files name the bare class (``"Attribution"``); those are found too.
    """
    import importlib

    if kind in Result._registry:
        return Result._registry[kind]
    module = kind.rpartition(".")[0]
    if module.split(".")[0] == "interpretlm":
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ResultFormatError(f"{where} holds a {kind!r}, whose module cannot be imported: {exc}") from exc
    elif "." not in kind:
        import interpretlm

        interpretlm.methods()  # imports every family, so their classes register
        matches = [k for k in Result._registry if k.rpartition(".")[2] == kind]
        if len(matches) == 1:
            return Result._registry[matches[0]]
    if kind not in Result._registry:
        raise ResultFormatError(f"{where} holds a {kind!r}, which this version of interpretlm does not know; "
                                "import the module that defines it first.")
    return Result._registry[kind]
