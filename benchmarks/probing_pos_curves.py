"""POS layer curves with control selectivity and MDL on the default decoder and on minilm-l6.

Run by hand (a few minutes on 2 CPU cores):

    PYTHONPATH=src .venv/bin/python benchmarks/probing_pos_curves.py [--texts 200] [--out docs/figures]

Writes ``pos_<model>.svg`` (layer curves) and ``pos_<model>.html`` (full report) and prints
each model's per-layer table: the figures quoted in the README.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import interpretlm as il
from interpretlm.viz.charts import line_chart_svg
from interpretlm.viz.figures import LineChart


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--models", default="smollm2-135m,minilm-l6")
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--no-mdl", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = il.probing.tasks.pos(n=args.texts, seed=0)
    print(task, task.info)
    for name in args.models.split(","):
        lm = il.load(name)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = il.probe(lm, task, layers="all", probe="logistic", control=True, mdl=not args.no_mdl, seed=0)
        dt = time.perf_counter() - t
        print(f"\n{name}: {rep.summary()}  ({dt:.0f} s)")
        print(rep.table)
        svg = line_chart_svg(LineChart(rep.layer_labels, {"accuracy": rep.scores["accuracy"],
                                                          "control accuracy": rep.scores["control_accuracy"],
                                                          "selectivity": rep.scores["selectivity"],
                                                          "majority baseline": [rep.baseline] * len(rep.layers)},
                                       title=f"POS probe on {name} (logistic, held-out accuracy)", y_label="accuracy",
                                       y_min=0, y_max=1))
        (out / f"pos_{name}.svg").write_text(svg, encoding="utf-8")
        rep.save_html(out / f"pos_{name}.html")


if __name__ == "__main__":
    main()
