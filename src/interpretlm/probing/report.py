"""The probing result: per-layer scores, their checks, and layer curves (line-chart payloads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..results import Result
from ..viz.figures import Figure, LineChart
from ..viz.figures import Table as TableFigure  # Table here is the rows of report.table

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

    nan_marks: ClassVar[tuple[str, ...]] = ("scores", "baseline")  # metrics that do not apply to the task

    def may_be_nan(self, path: str) -> bool:
        """NaN in ``scores`` marks a metric that does not apply, except on a layer whose activations
        were non-finite (``diagnostics["nonfinite_layers"]``): there it is a failure."""
        bad = self.diagnostics.get("nonfinite_layers") or []
        if bad and path.startswith("scores.") and path.endswith("]"):
            if self.layers[int(path.rsplit("[", 1)[1][:-1])] in bad:
                return False
        return super().may_be_nan(path)

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

    def figures(self) -> dict[str, Figure]:
        """``"task"`` (what was probed), ``"curves"`` (layer curves: the headline score, control,
        selectivity and baseline; Spearman / UUAS for structural probes), ``"mdl"`` (compression
        per layer, when MDL ran) and ``"per_layer"`` (the table)."""
        x = self.layer_labels
        kind = self.task.get("kind")
        figs: dict[str, Figure] = {"task": TableFigure(["", ""], [
            ("task", f"{self.task.get('name')} ({self.task.get('level')}-level, {kind})"),
            ("examples", f"{self.split.get('n_train')} train / {self.split.get('n_test')} test"),
            ("probe", str(self.probe)), ("classes", ", ".join(map(str, self.task.get('classes', []))))])}
        if kind == "distance":
            figs["curves"] = LineChart(x, {"Spearman": self.scores["spearman"], "UUAS": self.scores["uuas"]},
                                       title="Structural probe", y_label="score", y_min=0, y_max=1,
                                       unit="Spearman ρ of distances; UUAS: fraction of gold edges")
        else:
            main = {self.headline: self.scores[self.headline]}
            if kind == "categorical":
                main["macro-F1"] = self.scores["macro_f1"]
            for key in ("control_accuracy", "control_r2"):
                if any(v == v for v in self.scores.get(key, [])):
                    main[key.replace("_", " ")] = self.scores[key]
                    main["selectivity"] = self.scores["selectivity"]
            main["baseline"] = [self.baseline] * len(x)
            unit = "R² on held-out examples" if kind == "numeric" else "fraction of held-out examples correct"
            figs["curves"] = LineChart(x, main, y_label=self.headline, y_min=0, y_max=1, unit=unit,
                                       title=f"{self.task.get('name', '')}: held-out {self.headline} per layer")
            if any(v == v for v in self.scores.get("mdl_compression", [])):
                figs["mdl"] = LineChart(x, {"compression": self.scores["mdl_compression"]},
                                        title="MDL online code: compression over the uniform code",
                                        y_label="compression", unit="× the uniform code's bits", y_min=1)
        cols = list(self.table[0].keys()) if self.table else []
        figs["per_layer"] = TableFigure(cols, [[r[k] for k in r] for r in self.table], title="Per layer")
        return figs
