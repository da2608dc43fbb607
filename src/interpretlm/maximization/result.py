"""Results of activation maximization: mined corpus examples, and optimized inputs with their front."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..results import Result
from ..viz.figures import Bars, Figure, LineChart, Table, TokenShading

_BEFORE, _AFTER = 24, 6   # tokens of context shown around an example's maximum


def _shading(ex: dict[str, Any], scale: float | None, label: str) -> TokenShading:
    """One example window as token shading, cut to the context around its maximum."""
    p = int(ex["pos"])
    lo, hi = max(0, p - _BEFORE), min(len(ex["tokens"]), p + _AFTER + 1)
    return TokenShading(ex["tokens"][lo:hi], ex["values"][lo:hi], scale=scale, label=label)


@dataclass(kw_only=True)
class MinedExamples(Result):
    """Top-activating corpus windows, quantile samples and histograms of units (``il.maximize``, ``method="mine"``).

    Attributes:
        unit_names: ``[n]`` the units (``"blocks.12.mlp.neurons[417]"``), column order of the tensors.
        units: the units as plain data (``Unit.to_dict``).
        corpus: the corpus as plain data; window: tokens per window; n_windows, n_tokens: what was read.
        top_values: ``[n, k]`` each unit's largest window maxima, best first.
        top_windows, top_positions: ``[n, k]`` which window and which token in it.
        quantile_values: ``[n, bands, samples]`` window maxima sampled per band of the unit's range
            (NaN: the band has fewer windows); quantile_windows / quantile_positions likewise (-1).
        hist_counts: ``[n, bins]`` per-token values counted over ``[-hist_range, hist_range]`` (every
            ``hist_every``-th token of each window).
        hist_range: ``[n]``. mean, std, frequency: ``[n]`` per-token mean, standard deviation and
            share of tokens above the firing threshold.
        glu_names: the gated-MLP neurons split by sign; glu_frequency: ``[g, 4]`` share of tokens per
            gate × up sign combination (``GLU_COMBOS`` order); glu_values / glu_windows:
            ``[g, 4, k]`` per combination the top windows by magnitude (signed value; -1: none).
        dead, rare: units that never fire / fire on fewer than ``rare_frequency`` of the tokens.
        examples: per detailed unit, ``{"top": [...], "quantiles": [...], "glu": {combo: [...]}}``
            with each example's ``window``, ``tokens``, per-token ``values``, ``pos`` and ``max``.
        logit_effects: per detailed unit, the tokens its output direction promotes and suppresses.
    """

    unit_names: list[str] = field(default_factory=list)
    units: list[dict[str, Any]] = field(default_factory=list)
    corpus: dict[str, Any] = field(default_factory=dict)
    window: int = 0
    n_windows: int = 0
    n_tokens: int = 0
    top_values: torch.Tensor | None = None
    top_windows: torch.Tensor | None = None
    top_positions: torch.Tensor | None = None
    quantile_values: torch.Tensor | None = None
    quantile_windows: torch.Tensor | None = None
    quantile_positions: torch.Tensor | None = None
    hist_counts: torch.Tensor | None = None
    hist_range: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    frequency: torch.Tensor | None = None
    glu_names: list[str] = field(default_factory=list)
    glu_frequency: torch.Tensor | None = None
    glu_values: torch.Tensor | None = None
    glu_windows: torch.Tensor | None = None
    dead: list[str] = field(default_factory=list)
    rare: list[str] = field(default_factory=list)
    examples: dict[str, Any] = field(default_factory=dict)
    logit_effects: dict[str, Any] = field(default_factory=dict)
    optimized: dict[str, Any] = field(default_factory=dict)

    nan_marks: ClassVar[tuple[str, ...]] = ("quantile_values", "glu_values", "examples")

    @property
    def prompt(self) -> str:
        """What the page header shows as the input: the units."""
        more = f" and {len(self.unit_names) - 3} more" if len(self.unit_names) > 3 else ""
        return "units " + ", ".join(self.unit_names[:3]) + more

    def title(self) -> str:
        return "Top activations — " + (self.unit_names[0] if len(self.unit_names) == 1
                                       else f"{len(self.unit_names)} units")

    def summary(self) -> str:
        return (f"{len(self.unit_names)} unit(s) over {self.n_tokens:,} tokens ({self.n_windows:,} windows of "
                f"{self.window}); {len(self.dead)} dead, {len(self.rare)} rare")

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        """The first unit's best windows as ``(text around the maximum, value)``."""
        ex = self.examples.get(self.unit_names[0], {}).get("top", []) if self.unit_names else []
        rows = []
        for e in ex[:n]:
            p = int(e["pos"])
            rows.append(("".join(e["tokens"][max(0, p - 8):p + 1]), float(e["max"])))
        return rows

    def add_optimized(self, opt: "OptimizedInputs") -> "MinedExamples":
        """Put an optimization's front on this unit's dashboard, next to the corpus examples.

        Example:
            >>> top.add_optimized(il.maximize(lm, unit, method="epo")).save_html("unit.html")  # doctest: +SKIP
        """
        self.index(opt.unit)   # an unknown unit raises
        self.optimized[opt.unit] = {"method": opt.method, "front": [
            {"activation": r["activation"], "cross_entropy": r["cross_entropy"], "prompt": r["prompt"]}
            for r in opt.front]}
        return self

    def index(self, unit: Any) -> int:
        """The column of a unit (a :class:`~interpretlm.units.Unit` or its name)."""
        name = unit if isinstance(unit, str) else unit.name
        if name not in self.unit_names:
            from ..errors import ComponentError
            raise ComponentError(f"{name!r} was not mined; this result holds {len(self.unit_names)} units "
                                 f"({', '.join(self.unit_names[:4])}...).")
        return self.unit_names.index(name)

    def figures(self) -> dict[str, Figure]:
        figs: dict[str, Figure] = {}
        for name in list(self.examples)[:4]:
            figs.update(self.unit_figures(name, prefix=f"{name}: " if len(self.examples) > 1 else ""))
        if len(self.unit_names) > 1:
            rows = []
            for j, name in enumerate(self.unit_names[:200]):
                status = "dead" if name in self.dead else "rare" if name in self.rare else ""
                rows.append([name, float(self.top_values[j, 0]), float(self.mean[j]), float(self.frequency[j]), status])
            figs["units"] = Table(["unit", "max", "mean", "firing frequency", "status"], rows,
                                  title="Units", caption=f"{len(self.unit_names)} units; {len(self.dead)} dead, "
                                  f"{len(self.rare)} rare" + (" (first 200 shown)" if len(self.unit_names) > 200 else ""))
        return figs

    def unit_figures(self, name: str, prefix: str = "") -> dict[str, Figure]:
        """The dashboard of one detailed unit: examples, histogram, logit effects, GLU split."""
        j = self.index(name)
        ex = self.examples.get(name, {})
        scale = float(self.top_values[j, 0]) or None
        figs: dict[str, Figure] = {}
        if ex.get("top"):
            figs[prefix + "top examples"] = Table(
                ["#", "max", "window"], [[i + 1, float(e["max"]), _shading(e, scale, name)]
                                         for i, e in enumerate(ex["top"])],
                title=prefix + "Top-activating windows",
                caption=f"the {len(ex['top'])} windows of the corpus where {name} is largest; shading: its value "
                        "per token")
        if ex.get("quantiles"):
            figs[prefix + "quantile examples"] = Table(
                ["band", "max", "window"], [[b, float(e["max"]), _shading(e, scale, name)] for b, e in ex["quantiles"]],
                title=prefix + "Quantile samples",
                caption="random windows per band of the unit's range (band 1: the lowest firing values)")
        counts = self.hist_counts[j].tolist()
        r = float(self.hist_range[j])
        bins = len(counts)
        labels = [f"{-r + (2 * r) * (i + 0.5) / bins:+.3g}" for i in range(bins)]
        figs[prefix + "histogram"] = Bars(labels, {"tokens": [float(c) for c in counts]}, title=prefix + "Histogram",
                                          label_header="value", unit="tokens",
                                          caption=f"per-token values over {self.n_tokens:,} tokens; mean "
                                                  f"{float(self.mean[j]):.3g}, sd {float(self.std[j]):.3g}, firing "
                                                  f"on {float(self.frequency[j]):.2%}")
        eff = self.logit_effects.get(name)
        if eff:
            toks = [t for t, _ in eff["promoted"]] + [t for t, _ in eff["suppressed"]]
            vals = [v for _, v in eff["promoted"]] + [v for _, v in eff["suppressed"]]
            figs[prefix + "logit effects"] = Bars([repr(t) for t in toks], {"logit change": vals}, signed=True,
                                                  title=prefix + "Tokens the unit promotes and suppresses",
                                                  caption="its output direction through the final norm and the "
                                                          "unembedding (direct effect, per unit of activation)")
        opt = self.optimized.get(name)
        if opt:
            corpus_max = float(self.top_values[j, 0])
            figs[prefix + "optimized"] = Table(
                ["activation", "cross-entropy", "above the corpus maximum", "prompt"],
                [[r["activation"], r["cross_entropy"], "yes" if r["activation"] > corpus_max else "no", r["prompt"]]
                 for r in opt["front"]],
                title=prefix + f"Optimized prompts ({opt['method']}): the Pareto front",
                caption=f"activation against cross-entropy (nats/token); the corpus maximum is {corpus_max:.4g}")
        if name in self.glu_names:
            g = self.glu_names.index(name)
            from .mining_state import GLU_COMBOS
            figs[prefix + "GLU split"] = Bars(list(GLU_COMBOS), {"share of tokens": self.glu_frequency[g].tolist()},
                                              title=prefix + "Gate × up sign combinations", unit="share",
                                              caption="a gated neuron's value act(gate)·up reached four ways")
            rows = []
            for combo, exs in ex.get("glu", {}).items():
                for e in exs[:3]:
                    rows.append([combo, float(e["max"]), _shading(e, scale, name)])
            if rows:
                figs[prefix + "GLU examples"] = Table(["combination", "value", "window"], rows,
                                                      title=prefix + "Top windows per sign combination")
        return figs


@dataclass(kw_only=True)
class OptimizedInputs(Result):
    """Inputs optimized to maximize a unit (``il.maximize``, ``method="epo" | "gcg" | "continuous"``).

    Attributes:
        unit: the unit's name; unit_spec: the unit as plain data.
        prompts: the final prompts (one per population member), their token ids ``[m, length]``,
            ``activations`` ``[m]`` and ``cross_entropies`` ``[m]`` (mean next-token loss of the prompt).
        lambdas: ``[m]`` each member's fluency penalty.
        front: the Pareto front over everything evaluated: ``{"activation", "cross_entropy", "prompt",
            "ids"}`` rows by increasing cross-entropy.
        history: ``[steps, m]`` each member's activation after each iteration.
        projected: for ``continuous``: the activation of the soft prompt before projection to tokens.
    """

    unit: str = ""
    unit_spec: dict[str, Any] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    token_ids: torch.Tensor | None = None
    activations: torch.Tensor | None = None
    cross_entropies: torch.Tensor | None = None
    lambdas: list[float] = field(default_factory=list)
    front: list[dict[str, Any]] = field(default_factory=list)
    history: torch.Tensor | None = None
    projected: dict[str, Any] = field(default_factory=dict)

    @property
    def pareto(self) -> list[tuple[float, float, str]]:
        """``[(activation, cross-entropy, prompt), ...]`` along the front, by increasing cross-entropy."""
        return [(float(r["activation"]), float(r["cross_entropy"]), r["prompt"]) for r in self.front]

    @property
    def best(self) -> tuple[float, float, str]:
        """The front's highest activation ``(activation, cross-entropy, prompt)``."""
        return max(self.pareto, key=lambda r: r[0])

    @property
    def prompt(self) -> str:
        """What the page header shows as the input: the unit."""
        return f"unit {self.unit}"

    def title(self) -> str:
        return f"Optimized inputs ({self.method}) — {self.unit}"

    def summary(self) -> str:
        a, ce, p = self.best
        return f"best activation {a:.4g} at cross-entropy {ce:.3g}: {p!r}; front of {len(self.front)}"

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        return [(p, a) for a, _, p in sorted(self.pareto, key=lambda r: -r[0])[:n]]

    def figures(self) -> dict[str, Figure]:
        figs: dict[str, Figure] = {}
        figs["front"] = Table(["activation", "cross-entropy", "prompt"],
                              [[float(r["activation"]), float(r["cross_entropy"]), r["prompt"]] for r in self.front],
                              title="Pareto front: activation against cross-entropy",
                              caption="no other evaluated prompt has both a higher activation and a lower "
                                      "cross-entropy (lower: more fluent)")
        if len(self.front) > 1:
            figs["front chart"] = LineChart([f"{r['cross_entropy']:.2f}" for r in self.front],
                                            {"activation": [float(r["activation"]) for r in self.front]},
                                            x_label="cross-entropy (nats/token)", y_label="activation",
                                            title="The front")
        if self.history is not None and self.history.numel():
            h = self.history
            series = {f"λ={lam:.3g}": h[:, i].tolist() for i, lam in enumerate(self.lambdas[: h.shape[1]])}
            figs["history"] = LineChart([str(i + 1) for i in range(h.shape[0])], series, x_label="iteration",
                                        y_label="activation", title="Activation per member over the iterations")
        if self.prompts:
            figs["population"] = Table(["λ", "activation", "cross-entropy", "prompt"],
                                       [[float(lam) if not math.isnan(lam) else 0.0, float(a), float(c), p]
                                        for lam, a, c, p in zip(self.lambdas, self.activations.tolist(),
                                                                self.cross_entropies.tolist(), self.prompts)],
                                       title="Final population")
        return figs


__all__ = ["MinedExamples", "OptimizedInputs"]
