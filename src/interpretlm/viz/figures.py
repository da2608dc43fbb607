"""Figure payloads: the data of every picture, apart from how it is drawn.

A result exposes its pictures as named payloads (``result.figures()``); one renderer per
kind in :mod:`interpretlm.viz` draws them (:func:`interpretlm.viz.render`) in reports,
notebooks, the demo and the web app. A payload holds plain data only (strings, numbers,
lists, dicts: no tensors, no HTML), so it serializes with :meth:`Figure.to_dict` /
:meth:`Figure.from_dict` and can be sent to a browser as JSON.

Every payload has three optional text slots drawn around it: ``title`` (a heading),
``caption`` (a muted line above) and ``note`` (a muted line below). Renderers escape every
string; payloads never contain markup.

Kinds:

* :class:`TokenShading` — tokens coloured by a signed value (attributions, rollout);
* :class:`TokenStrip` — tokens with visible boundaries (tokenization, top-token lists);
* :class:`Bar` — one inline bar (a table cell); :class:`Bars` — a labelled bar chart;
* :class:`Heatmap` — a signed ``[rows, cols]`` grid (patching effects, head scores);
* :class:`TokenGrid` — a ``[rows, cols]`` grid of tokens with a value each (the logit lens);
* :class:`LineChart` — series over an x axis (probing layer curves, faithfulness curves);
* :class:`Graph` — nodes in rows and weighted edges (circuits);
* :class:`AttentionView` — the interactive head view and model view of attention;
* :class:`Table` — a header and rows, whose cells may themselves be payloads;
* :class:`Text` — a paragraph.

Example:
    >>> from interpretlm.viz.figures import Figure, TokenShading
    >>> f = TokenShading(["The", " cat"], [0.5, -1.0], label="saliency", title="why ' sat'?")
    >>> Figure.from_dict(f.to_dict()) == f
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import InterpretLMError


class FigureError(InterpretLMError, ValueError):
    """A figure payload is malformed (wrong lengths, an unknown kind)."""


# ---------------------------------------------------------------- number encoding
# JSON has no NaN or infinity (and results are written with allow_nan=False), but a NaN
# is meaningful in a payload (a cell that cannot be patched, a metric that does not apply).

def _num_out(v: Any) -> Any:
    """A float for JSON: NaN -> ``None``, ±inf -> ``"inf"`` / ``"-inf"``; nested lists recursively."""
    if isinstance(v, (list, tuple)):
        return [_num_out(x) for x in v]
    if v is None:
        return None
    f = float(v)
    if math.isnan(f):
        return None
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def _num_in(v: Any) -> Any:
    """Inverse of :func:`_num_out`."""
    if isinstance(v, list):
        return [_num_in(x) for x in v]
    if v is None:
        return float("nan")
    return float(v)


def _floats(v: Any) -> list:
    """Any array-like (list, NumPy array, tensor) -> nested lists of Python floats."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [_floats(x) for x in v]
    return float(v)


def _scale(v: Any) -> float | None:
    """An optional positive scale: ``None``, NaN, infinite or non-positive -> ``None`` (fit the data)."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) and f > 0 else None


def _cell_out(v: Any) -> Any:
    if isinstance(v, Figure):
        return v.to_dict()
    if isinstance(v, float) and not math.isfinite(v):
        return {"float": repr(v)}  # a table cell may hold None too, so NaN is not None here
    return v


def _cell_in(v: Any) -> Any:
    if isinstance(v, dict):
        if "kind" in v:
            return Figure.from_dict(v)
        if "float" in v:
            return float(v["float"])
    return v


def _plain_cell(v: Any) -> Any:
    """A table cell as plain data: NumPy / torch scalars -> Python numbers; payloads kept."""
    if isinstance(v, Figure) or v is None or isinstance(v, (str, bool, int, float)):
        return v
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return v.item()
    return str(v)


# ---------------------------------------------------------------- base
@dataclass(kw_only=True)
class Figure:
    """Base class of figure payloads.

    Attributes:
        title: a heading drawn above the figure (empty: none).
        caption: a muted line drawn under the title, above the figure.
        note: a muted line drawn under the figure.
    """

    title: str = ""
    caption: str = ""
    note: str = ""

    kinds: ClassVar[dict[str, type["Figure"]]] = {}
    _numeric: ClassVar[tuple[str, ...]] = ()  # fields holding (nested lists of) floats, NaN allowed

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Figure.kinds[cls.__name__] = cls

    @property
    def kind(self) -> str:
        """The payload's kind (its class name), the ``"kind"`` key of :meth:`to_dict`."""
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """The payload as JSON-able data: ``{"kind": ..., field: value, ...}`` (NaN as ``None``)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = _num_out(v) if f.name in self._numeric else self._field_out(f.name, v)
        return out

    def _field_out(self, name: str, value: Any) -> Any:
        return value

    @classmethod
    def _field_in(cls, name: str, value: Any) -> Any:
        return value

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Figure":
        """Rebuild a payload from :meth:`to_dict` (any kind, through ``Figure.from_dict``)."""
        kind = data.get("kind")
        klass = Figure.kinds.get(kind) if isinstance(kind, str) else None
        if klass is None or (cls is not Figure and not issubclass(klass, cls)):
            raise FigureError(f"Unknown figure kind {kind!r}; known: {', '.join(sorted(Figure.kinds))}.")
        names = {f.name for f in dataclasses.fields(klass)}
        kw = {k: (_num_in(v) if k in klass._numeric else klass._field_in(k, v))
              for k, v in data.items() if k in names}
        return klass(**kw)


# ---------------------------------------------------------------- kinds
@dataclass
class TokenShading(Figure):
    """Tokens coloured by a signed value: red positive, blue negative, hover shows the value.

    Attributes:
        tokens: ``[n]`` display strings.
        values: ``[n]`` the scores.
        scale: the |value| drawn at full colour (``None``: the largest |value|).
        label: what the value is (shown on hover, e.g. the method).
        special: ``[n]`` special-token marks (drawn dashed), or ``None``.
        unit: the value's unit, drawn with the colour bar (e.g. ``"log p(' Mary')"``).
    """

    tokens: list[str]
    values: list[float]
    scale: float | None = None
    label: str = "score"
    special: list[bool] | None = None
    unit: str = ""

    _numeric: ClassVar[tuple[str, ...]] = ("values",)

    def __post_init__(self) -> None:
        self.tokens = [str(t) for t in self.tokens]
        self.values = _floats(self.values)
        self.scale = _scale(self.scale)
        self.special = None if self.special is None else [bool(s) for s in self.special]
        if len(self.tokens) != len(self.values):
            raise FigureError(f"{len(self.tokens)} tokens but {len(self.values)} values")


@dataclass
class TokenStrip(Figure):
    """Tokens with visible boundaries (special tokens dashed); hover shows ``hover`` or the position.

    Attributes:
        tokens: ``[n]`` display strings.
        special: ``[n]`` special-token marks, or ``None``.
        hover: ``[n]`` hover text per token, or ``None`` (then ``"position i"``).
    """

    tokens: list[str]
    special: list[bool] | None = None
    hover: list[str] | None = None

    def __post_init__(self) -> None:
        self.tokens = [str(t) for t in self.tokens]
        self.special = None if self.special is None else [bool(s) for s in self.special]
        self.hover = None if self.hover is None else [str(h) for h in self.hover]


@dataclass
class Bar(Figure):
    """One horizontal bar of length ``|value| / scale × width`` pixels (a table cell).

    Attributes:
        value: the value.
        scale: the value drawn at full width.
        width: full width in pixels.
        signed: colour by sign (red positive, blue negative) instead of the accent colour.
    """

    value: float
    scale: float = 1.0
    width: int = 160
    signed: bool = False

    _numeric: ClassVar[tuple[str, ...]] = ("value",)

    def __post_init__(self) -> None:
        self.value, self.scale = float(self.value), _scale(self.scale) or 1.0


class _Series:
    """Figures with ``series: {name: [values]}`` (NaN-safe JSON for every series)."""

    def _field_out(self, name: str, value: Any) -> Any:
        return {k: _num_out(v) for k, v in value.items()} if name == "series" else value

    @classmethod
    def _field_in(cls, name: str, value: Any) -> Any:
        return {k: _num_in(v) for k, v in value.items()} if name == "series" else value

    def _check_series(self, labels: list[str], what: str) -> None:
        """Series as ``{str: [float]}``, each with one value per label."""
        self.series = {str(k): _floats(v) for k, v in self.series.items()}
        for k, v in self.series.items():
            if len(v) != len(labels):
                raise FigureError(f"series {k!r} has {len(v)} values for {len(labels)} {what}")


@dataclass
class Bars(_Series, Figure):
    """A bar chart: one row per label, one bar and its value per series.

    Attributes:
        labels: ``[n]`` row labels.
        series: ``{name: [n] values}``, drawn left to right.
        scale: the |value| drawn at full width (``None``: the largest |value| of all series).
        width: full bar width in pixels.
        signed: colour by sign (red positive, blue negative) instead of the accent colour.
        label_header: the header of the label column.
        unit: the values' unit, drawn with the value axis over each bar column (e.g. ``"probability"``).
    """

    labels: list[str]
    series: dict[str, list[float]]
    scale: float | None = None
    width: int = 160
    signed: bool = False
    label_header: str = ""
    unit: str = ""

    def __post_init__(self) -> None:
        self.labels = [str(x) for x in self.labels]
        self._check_series(self.labels, "labels")
        self.scale = _scale(self.scale)



@dataclass
class Heatmap(Figure):
    """A grid of cells coloured by a signed value (red positive, blue negative; NaN grey).

    Attributes:
        rows: ``[r]`` row labels.
        cols: ``[c]`` column labels.
        values: ``[r][c]`` the values.
        scale: the |value| drawn at full colour (``None``: the largest finite |value|).
        label: what the value is (hover and legend).
        unit: the value's unit (legend).
        nan: why a cell may be NaN (legend, drawn only when a cell is NaN).
    """

    rows: list[str]
    cols: list[str]
    values: list[list[float]]
    scale: float | None = None
    label: str = "value"
    unit: str = ""
    nan: str = "not defined"

    _numeric: ClassVar[tuple[str, ...]] = ("values",)

    def __post_init__(self) -> None:
        self.rows, self.cols = [str(r) for r in self.rows], [str(c) for c in self.cols]
        self.values = _floats(self.values)
        self.scale = _scale(self.scale)
        if len(self.values) != len(self.rows) or any(len(v) != len(self.cols) for v in self.values):
            raise FigureError(f"values must be [{len(self.rows)} rows][{len(self.cols)} cols]")


@dataclass
class TokenGrid(Figure):
    """A grid whose cells are tokens, each with a value in ``[0, 1]`` that shades it (the logit lens).

    Attributes:
        rows: ``[r]`` row labels (layers). cols: ``[c]`` column tokens (positions).
        cells: ``[r][c]`` the token shown in each cell.
        values: ``[r][c]`` the value shown under it and shading it (a probability).
        label: what the value is (legend, hover).
        marks: ``[r][c]`` an extra line per cell (e.g. the target's rank), or ``None``.
        marks_label: what the marks are (legend, hover).
    """

    rows: list[str]
    cols: list[str]
    cells: list[list[str]]
    values: list[list[float]]
    label: str = "probability"
    marks: list[list[str]] | None = None
    marks_label: str = ""

    _numeric: ClassVar[tuple[str, ...]] = ("values",)

    def __post_init__(self) -> None:
        self.rows, self.cols = [str(r) for r in self.rows], [str(c) for c in self.cols]
        self.cells = [[str(t) for t in row] for row in self.cells]
        self.values = _floats(self.values)
        self.marks = None if self.marks is None else [[str(m) for m in row] for row in self.marks]
        shape = (len(self.rows), len(self.cols))
        for name, grid in (("cells", self.cells), ("values", self.values), ("marks", self.marks)):
            if grid is not None and (len(grid) != shape[0] or any(len(r) != shape[1] for r in grid)):
                raise FigureError(f"{name} must be [{shape[0]} rows][{shape[1]} cols]")


@dataclass
class LineChart(_Series, Figure):
    """Lines over a categorical x axis (NaN points are skipped). The title is drawn in the chart.

    Attributes:
        x: ``[n]`` x labels (e.g. layers).
        series: ``{name: [n] values}``, one line each, in the legend's order.
        x_label, y_label: axis titles.
        y_min, y_max: include these in the y range (``None``: fit the data).
        unit: the y values' unit, drawn with the y axis title.
    """

    x: list[str]
    series: dict[str, list[float]]
    x_label: str = "layer"
    y_label: str = ""
    y_min: float | None = None
    y_max: float | None = None
    unit: str = ""

    def __post_init__(self) -> None:
        self.x = [str(v) for v in self.x]
        self._check_series(self.x, "x labels")
        self.y_min = None if self.y_min is None else float(self.y_min)
        self.y_max = None if self.y_max is None else float(self.y_max)



@dataclass
class Graph(Figure):
    """A layered graph: nodes in rows (lowest row at the bottom), weighted signed edges.

    Attributes:
        nodes: ``{"name": str, "row": int, "score": float, "terminal": bool}`` each;
            ``terminal`` marks inputs and outputs (drawn in another colour).
        edges: ``{"source": name, "target": name, "score": float}`` each; line width follows
            ``|score|``, colour its sign.
        width: the drawing's width in pixels.
        max_nodes: the drawing first shows the terminals and the strongest non-terminal
            nodes up to this many (:meth:`display_nodes`); a control shows more, progressively
            (:meth:`levels`: 2× and 4× as many, each pruned the same way).
        faithfulness: the measured faithfulness of the whole graph (``None``: not measured).
        pruned_faithfulness: that of the pruned drawing (``None``: not measured).
        edge_label: what an edge score is (legend).
        level_faithfulness: the measured faithfulness of each further level of :meth:`levels`
            (after the first), NaN where not measured.
    """

    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    width: int = 900
    max_nodes: int = 30
    faithfulness: float | None = None
    pruned_faithfulness: float | None = None
    edge_label: str = "edge score"
    level_faithfulness: list[float] = dataclasses.field(default_factory=list)

    _numeric: ClassVar[tuple[str, ...]] = ("level_faithfulness",)
    LEVELS: ClassVar[tuple[int, ...]] = (1, 2, 4)  # multiples of max_nodes the control steps through

    @staticmethod
    def levels_for(n_nodes: int, max_nodes: int) -> list[int]:
        """The node counts drawn, one per step of the "show more" control: ``max_nodes`` × 1, 2, 4,
        each below ``n_nodes``, then ``n_nodes`` itself when it is at most 4 × ``max_nodes`` (beyond
        that, a drawing is a hairball: the rest is in the tables).

        Example:
            >>> Graph.levels_for(137, 30), Graph.levels_for(100, 30), Graph.levels_for(12, 30)
            ([30, 60, 120], [30, 60, 100], [12])
        """
        steps = [k * max_nodes for k in Graph.LEVELS if k * max_nodes < n_nodes]
        return steps + ([n_nodes] if n_nodes <= Graph.LEVELS[-1] * max_nodes else [])

    def levels(self) -> list[int]:
        """:meth:`levels_for` this graph."""
        return self.levels_for(len(self.nodes), self.max_nodes)

    @staticmethod
    def prune(nodes: list[dict[str, Any]], max_nodes: int) -> list[str]:
        """Names of the nodes drawn first: every terminal, then non-terminals by ``|score|`` (NaN last),
        ``max_nodes`` in all (at least the terminals), in the given order.

        Example:
            >>> Graph.prune([{"name": "in", "score": 0, "terminal": True}, {"name": "a", "score": -3},
            ...              {"name": "b", "score": 1}], 2)
            ['in', 'a']
        """
        def strength(n: dict[str, Any]) -> float:
            v = abs(float(n["score"]))
            return v if math.isfinite(v) else -1.0
        terminal = [n["name"] for n in nodes if n.get("terminal")]
        others = sorted((n for n in nodes if not n.get("terminal")), key=strength, reverse=True)
        keep = set(terminal) | {n["name"] for n in others[:max(0, max_nodes - len(terminal))]}
        return [n["name"] for n in nodes if n["name"] in keep]

    def display_nodes(self) -> list[str]:
        """:meth:`prune` of this graph's nodes to ``max_nodes``."""
        return self.prune(self.nodes, self.max_nodes)

    def __post_init__(self) -> None:
        self.max_nodes = int(self.max_nodes)
        self.faithfulness = None if self.faithfulness is None else float(self.faithfulness)
        self.pruned_faithfulness = None if self.pruned_faithfulness is None else float(self.pruned_faithfulness)
        self.level_faithfulness = _floats(list(self.level_faithfulness))
        self.nodes = [{"name": str(n["name"]), "row": int(n["row"]), "score": float(n["score"]),
                       "terminal": bool(n.get("terminal", False))} for n in self.nodes]
        names = {n["name"] for n in self.nodes}
        self.edges = [{"source": str(e["source"]), "target": str(e["target"]), "score": float(e["score"])}
                      for e in self.edges]
        missing = {e[k] for e in self.edges for k in ("source", "target")} - names
        if missing:
            raise FigureError(f"edges name nodes that are not in the graph: {sorted(missing)[:5]}")

    def _field_out(self, name: str, value: Any) -> Any:
        if name in ("faithfulness", "pruned_faithfulness"):
            return None if value is None else {"float": _num_out(value)}  # None is "not measured", not NaN
        return [{**item, "score": _num_out(item["score"])} for item in value] if name in ("nodes", "edges") else value

    @classmethod
    def _field_in(cls, name: str, value: Any) -> Any:
        if name in ("faithfulness", "pruned_faithfulness"):
            return None if value is None else _num_in(value["float"])
        return [{**item, "score": _num_in(item["score"])} for item in value] if name in ("nodes", "edges") else value


@dataclass
class AttentionView(Figure):
    """The interactive attention view (layer/head picker, hover, model view of every head).

    The fields are :func:`interpretlm.viz.attention.attention_payload`'s: patterns stored
    as base64 ``uint8`` images (``value / 255`` is the probability), the lower triangle only
    for a causal model, one block per layer (compressed after the first), compact enough to
    send to a browser. Build one with :meth:`from_patterns`.

    Attributes:
        tokens: ``[pos]`` display strings. special: ``[pos]`` special-token marks.
        layers, heads: the real indices of the kept layers and heads.
        grid: cells per side of each head-view image; block: tokens per cell side.
        thumb: cells per side of each model-view thumbnail (pooled in the browser).
        tri: only the lower triangle of each image is stored (a causal model).
        full: one base64 block per layer: its heads' images one after the other.
        packed: per layer, ``"raw"`` or ``"deflate"`` (zlib stream) for ``full``.
    """

    tokens: list[str]
    special: list[bool]
    layers: list[int]
    heads: list[int]
    grid: int
    block: int
    thumb: int
    tri: bool
    full: list[str]
    packed: list[str]

    @classmethod
    def from_patterns(cls, tokens: list[str], patterns: Any, layers: list[int], heads: list[int], *,
                      special: list[bool] | None = None, max_bytes: int = 8_000_000,
                      **text: str) -> "AttentionView":
        """From ``patterns [layers, heads, query, key]`` (probabilities); ``text``: title / caption / note.

        Example:
            >>> import numpy as np
            >>> v = AttentionView.from_patterns(["a", "b"], np.full((1, 1, 2, 2), 0.5), [0], [0])
            >>> v.grid
            2
        """
        import numpy as np

        from .attention import attention_payload

        return cls(**attention_payload(tokens, np.asarray(patterns), layers, heads, special=special,
                                       max_bytes=max_bytes), **text)


@dataclass
class Table(Figure):
    """A table; a cell is a string, a number, ``None`` (empty) or a nested payload (drawn in place).

    Attributes:
        header: ``[c]`` column titles.
        rows: ``[r][c]`` cells.
        nan: why a cell may be NaN (a footnote, drawn only when a cell is NaN).
    """

    header: list[str]
    rows: list[list[Any]]
    nan: str = "not defined"

    def __post_init__(self) -> None:
        self.header = [str(h) for h in self.header]
        self.rows = [[_plain_cell(c) for c in row] for row in self.rows]

    def _field_out(self, name: str, value: Any) -> Any:
        return [[_cell_out(c) for c in row] for row in value] if name == "rows" else value

    @classmethod
    def _field_in(cls, name: str, value: Any) -> Any:
        return [[_cell_in(c) for c in row] for row in value] if name == "rows" else value


@dataclass
class Text(Figure):
    """A paragraph of plain text (``muted``: in the small grey style of notes)."""

    text: str
    muted: bool = False

    def __post_init__(self) -> None:
        self.text = str(self.text)


__all__ = ["AttentionView", "Bar", "Bars", "Figure", "FigureError", "Graph", "Heatmap", "LineChart", "Table",
           "Text", "TokenGrid", "TokenShading", "TokenStrip"]
