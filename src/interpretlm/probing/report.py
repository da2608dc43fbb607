"""The probing result: per-layer scores, their checks, and layer curves as inline SVG."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..results import Result
from ..viz import html as H

PALETTE = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#868e96", "#e8590c"]


class Table(list):
    """Rows (dicts) with a plain-text rendering; ``Table.column(name)`` gives one column."""

    def column(self, name: str) -> list[Any]:
        return [r.get(name) for r in self]

    def to_pandas(self):  # pragma: no cover - optional convenience
        import pandas as pd
        return pd.DataFrame(list(self))

    def __str__(self) -> str:
        if not self:
            return "(empty table)"
        cols = list(self[0].keys())

        def fmt(v: Any) -> str:
            if isinstance(v, float):
                return "—" if v != v else f"{v:.3f}"
            return str(v)
        cells = [[fmt(r.get(c)) for c in cols] for r in self]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def line_chart(x_labels: list[str], series: dict[str, list[float]], *, title: str = "", y_label: str = "",
               y_min: float | None = None, y_max: float | None = None, width: int = 720, height: int = 260) -> str:
    """An inline SVG line chart (one line per series, ``nan`` values skipped)."""
    vals = [v for s in series.values() for v in s if v == v and not math.isinf(v)]
    lo = min(vals + ([y_min] if y_min is not None else [])) if vals else 0.0
    hi = max(vals + ([y_max] if y_max is not None else [])) if vals else 1.0
    if y_min is not None:
        lo = min(lo, y_min)
    if hi - lo < 1e-9:
        hi = lo + 1
    L, R, T, B = 48, 150, 24, 36
    pw, ph = width - L - R, height - T - B
    n = max(len(x_labels), 2)

    def px(i: int) -> float:
        return L + pw * i / (n - 1)

    def py(v: float) -> float:
        return T + ph * (1 - (v - lo) / (hi - lo))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{H.escape(title)}" '
             'style="font: 11px sans-serif"><rect width="100%" height="100%" fill="white"/>']
    if title:
        parts.append(f'<text x="{L}" y="14" font-weight="bold">{H.escape(title)}</text>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = py(v)
        parts.append(f'<line x1="{L}" x2="{L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e8"/>'
                     f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    step = max(1, len(x_labels) // 16)
    for i, lab in enumerate(x_labels):
        if i % step == 0 or i == len(x_labels) - 1:
            parts.append(f'<text x="{px(i):.1f}" y="{T + ph + 14}" text-anchor="middle">{H.escape(lab)}</text>')
    parts.append(f'<text x="{L + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">layer</text>')
    if y_label:
        parts.append(f'<text x="12" y="{T + ph / 2:.1f}" transform="rotate(-90 12 {T + ph / 2:.1f})" '
                     f'text-anchor="middle">{H.escape(y_label)}</text>')
    for c, (name, ys) in enumerate(series.items()):
        color = PALETTE[c % len(PALETTE)]
        pts = [(px(i), py(v)) for i, v in enumerate(ys) if v == v and not math.isinf(v)]
        if pts:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{d}"/>')
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in pts]
        ly = T + 14 * c + 6
        parts.append(f'<line x1="{L + pw + 12}" x2="{L + pw + 30}" y1="{ly}" y2="{ly}" stroke="{color}" '
                     f'stroke-width="2"/><text x="{L + pw + 34}" y="{ly + 4}">{H.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _nan_list(n: int) -> list[float]:
    return [float("nan")] * n


@dataclass(kw_only=True)
class ProbeReport(Result):
    """Per-layer probing scores (``il.probe``).

    Attributes:
        task: the task's name, level, kind, classes, sizes and provenance.
        probe: the probe's name and settings.
        layers: the canonical names probed, in order (``"embed"`` first when included).
        scores: per metric, one value per layer: ``accuracy``, ``macro_f1`` (classes),
            ``r2`` (regression), ``control_accuracy`` (``control_r2`` for regression),
            ``selectivity``, ``mdl_codelength``,
            ``mdl_compression``, ``spearman`` and ``uuas`` (structural probe),
            ``train_score``; ``nan`` where a metric does not apply.
        baseline: the majority-class accuracy (or 0 R²) on the test split.
        split: sizes of the train and test sets, the seed and the test fraction.

    ``report.table`` gives one row per layer; ``report.to_html()`` draws the layer curves.
    """

    task: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)
    baseline: float = float("nan")
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def layer_labels(self) -> list[str]:
        out = []
        for n in self.layers:
            parts = n.split(".")
            out.append(parts[1] if n.startswith("blocks.") else n)
        return out

    @property
    def table(self) -> Table:
        """One row per layer with every metric that applies to this task."""
        keep = [k for k, v in self.scores.items() if any(x == x for x in v)]
        return Table({"layer": lab, "component": name, **{k: self.scores[k][i] for k in keep}}
                     for i, (lab, name) in enumerate(zip(self.layer_labels, self.layers)))

    @property
    def headline(self) -> str:
        return "spearman" if self.task.get("kind") == "distance" else (
            "r2" if self.task.get("kind") == "numeric" else "accuracy")

    def best_layer(self) -> tuple[str, float]:
        vals = self.scores.get(self.headline, [])
        finite = [(v, i) for i, v in enumerate(vals) if v == v]
        if not finite:
            return "", float("nan")
        v, i = max(finite)
        return self.layers[i], v

    def title(self) -> str:
        return f"Probing — {self.task.get('name', '')}"

    def summary(self) -> str:
        name, v = self.best_layer()
        sel = ""
        if "selectivity" in self.scores and name:
            s = self.scores["selectivity"][self.layers.index(name)]
            sel = f", selectivity {s:.3f}" if s == s else ""
        base = f" · baseline {self.baseline:.3f}" if self.baseline == self.baseline else ""
        return f"model {self.model} · {self.probe.get('name', '')} probe · best {self.headline} {v:.3f} at {name}{sel}{base}"

    def _html_body(self) -> str:
        x = self.layer_labels
        charts = []
        kind = self.task.get("kind")
        if kind == "distance":
            charts.append(line_chart(x, {"Spearman": self.scores["spearman"], "UUAS": self.scores["uuas"]},
                                     title="Structural probe", y_label="score", y_min=0, y_max=1))
        else:
            main = {self.headline: self.scores[self.headline]}
            if kind == "categorical":
                main["macro-F1"] = self.scores["macro_f1"]
            for key in ("control_accuracy", "control_r2"):
                if any(v == v for v in self.scores.get(key, [])):
                    main[key.replace("_", " ")] = self.scores[key]
                    main["selectivity"] = self.scores["selectivity"]
            main["baseline"] = [self.baseline] * len(x)
            charts.append(line_chart(x, main, title=f"{self.task.get('name', '')}: held-out {self.headline} per layer",
                                     y_label=self.headline, y_min=0, y_max=1))
            if any(v == v for v in self.scores.get("mdl_compression", [])):
                charts.append(line_chart(x, {"compression": self.scores["mdl_compression"]},
                                         title="MDL online code: compression over the uniform code",
                                         y_label="× uniform", y_min=1))
        rows = [[r[k] for k in r] for r in self.table]
        cols = list(self.table[0].keys()) if self.table else []
        info = H.table(["", ""], [("task", f"{self.task.get('name')} ({self.task.get('level')}-level, {kind})"),
                                  ("examples", f"{self.split.get('n_train')} train / {self.split.get('n_test')} test"),
                                  ("probe", str(self.probe)), ("classes", ", ".join(map(str, self.task.get('classes', []))))])
        return info + "".join(f"<div>{c}</div>" for c in charts) + "<h2>Per layer</h2>" + H.table(cols, rows)
