"""Influence functions: linear datamodeling score (LDS) of every method against real retraining.

Run by hand (a few minutes on 2 shared CPU cores):

    PYTHONPATH=src .venv/bin/python benchmarks/influence.py [--train 32] [--queries 8] [--subsets 50]
    PYTHONPATH=src .venv/bin/python benchmarks/influence.py --workload default-model

``--workload default-model`` is issue 16's side-by-side workload, our side: EK-FAC on the default
model's 90 MLP linear layers, 32 training strings × 4 queries of 16 tokens (projection 32): wall
time, peak resident memory of the process and disk of the index. (Kronfluence on the same
workload, measured in the issue: 134 s and 8.2 GB peak.)

The workload (issue 16, point 3): a tiny Llama-like model (2 layers, d_model 64, grouped-query
attention, the test tokenizer) trained from a fixed initialisation on ``--train`` verses of the
built-in corpus (the King James Bible), full-batch Adam; ``--subsets`` random halves retrained from
the same initialisation (subset ``j`` drawn with seed ``j + 1``, recorded); each held-out verse's
loss is predicted by every method (all linear layers, exact gradients: no projection, the model
is tiny) and the Spearman correlation with the actual losses is averaged over the queries, with
its standard error. A second EK-FAC row uses projection 16 (LoGra-style) to show what the
projection costs. Times are wall seconds in this process under shared load: compare them as
ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import interpretlm as il  # noqa: E402
from interpretlm.testing import tiny_lm  # noqa: E402
from _results import record  # noqa: E402
from interpretlm.influence.validate import spearman  # noqa: E402


def verses(n: int, skip: int = 0) -> list[str]:
    """``n`` verses (lines of 40-140 characters) of the built-in corpus, after the first ``skip``."""
    out = []
    for doc in il.corpus("builtin").documents():
        for line in doc.split("\n"):
            line = line.strip()
            if 40 <= len(line) <= 140:
                out.append(line)
        if len(out) >= n + skip:
            break
    return out[skip:skip + n]


def default_model_texts(lm) -> tuple[list[str], list[str]]:
    """32 training verses and 4 queries of 16 tokens (the next verses, cut) for the default-model workload."""
    pool = verses(40)
    ids = [lm.tokenize(t).input_ids[0][:16].tolist() for t in pool[32:36]]
    return pool[:32], [lm.tokenizer.decode(q, skip_special_tokens=True) for q in ids]


def default_model_workload(projection: int, out: str | None, peer: str | None) -> None:
    """EK-FAC on the default model: 90 MLP layers, 32 training strings, 4 queries of 16 tokens."""
    import resource
    import tempfile

    lm = il.load()
    train, queries = default_model_texts(lm)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        idx = il.influence.index(lm, train, method="ekfac", modules="mlp", path=tmp, projection=projection,
                                 progress=False)
        fit = time.perf_counter() - t0
        s = idx.scores(queries)
        total = time.perf_counter() - t0
        disk = idx.disk_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"default model, {len(idx.specs)} MLP layers, 32 training strings x 4 queries of 16 tokens, "
          f"projection {projection}: fit {fit:.1f} s, total {total:.1f} s; peak RSS {peak:.0f} MB "
          f"(after loading the model: {base:.0f} MB); index {disk / 1e6:.1f} MB on disk; scores {tuple(s.shape)}")
    if out:
        Path(out).write_text(json.dumps({"scores": s.tolist(), "seconds": total, "peak_rss_mb": peak, "disk_bytes": disk}))
    if peer:
        compare_with_peer(s, json.loads(Path(peer).read_text()), total, peak, disk)
    record("influence", "default_model.seconds", round(total, 1))
    record("influence", "default_model.peak_rss_mb", round(peak))
    record("influence", "default_model.disk_mb", round(disk / 1e6, 1))


def compare_with_peer(ours: torch.Tensor, peer: dict, seconds: float, peak: float, disk: int) -> None:
    """Kronfluence's run (``_kronfluence_runner.py``'s JSON) against ours: cost ratios and top-10 agreement."""
    theirs = torch.tensor(peer["scores"])
    overlap, rho = [], []
    for q in range(ours.shape[0]):
        a = set(ours[q].argsort(descending=True)[:10].tolist())
        b = set(theirs[q].argsort(descending=True)[:10].tolist())
        overlap.append(len(a & b) / 10)
        rho.append(spearman(ours[q].tolist(), theirs[q].tolist()))
    print(f"Kronfluence: {peer['seconds']:.1f} s, peak RSS {peer['peak_rss_mb']:.0f} MB, {peer['disk_bytes'] / 1e6:.1f} MB "
          f"on disk; ours / theirs: time {seconds / peer['seconds']:.2f}x, peak memory {peak / peer['peak_rss_mb']:.2f}x; "
          f"top-10 proponent overlap per query {overlap} (mean {sum(overlap) / len(overlap):.2f}); "
          f"Spearman of all 32 scores per query {[round(r, 2) for r in rho]}")
    record("influence", "kronfluence.seconds", round(peer["seconds"], 1))
    record("influence", "kronfluence.peak_rss_mb", round(peer["peak_rss_mb"]))
    record("influence", "kronfluence.top10_overlap", round(sum(overlap) / len(overlap), 2))
    record("influence", "kronfluence.spearman", round(sum(rho) / len(rho), 2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", choices=["lds", "default-model"], default="lds")
    ap.add_argument("--projection", type=int, default=32, help="projection of the default-model workload")
    ap.add_argument("--train", type=int, default=32)
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--subsets", type=int, default=50)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", default=None, help="write the report (or the default-model scores) as JSON here")
    ap.add_argument("--peer", default=None, help="default-model workload: Kronfluence's JSON from _kronfluence_runner.py")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.workload == "default-model":
        default_model_workload(args.projection, args.out, args.peer)
        return
    torch.set_num_threads(1)  # tiny models: one thread is fastest under shared load
    pool = verses(args.train + args.queries)
    train, queries = pool[:args.train], pool[args.train:]

    def model_fn(seed: int):
        return tiny_lm("llama", seed=seed)

    t0 = time.perf_counter()
    rep = il.influence.validate(model_fn, train, queries, subsets=args.subsets, steps=args.steps, lr=args.lr,
                                modules="all", projection=None, progress=False,
                                variants={"ekfac (projection 16)": ("ekfac", {"projection": 16})})
    total = time.perf_counter() - t0
    print(f"{args.train} training verses, {len(queries)} held-out queries, {args.subsets} half-subsets "
          f"({rep.subset_size} texts each), {args.steps} full-batch Adam steps, lr {args.lr}")
    print(f"training {rep.train_seconds:.1f} s; retraining {args.subsets} subsets {rep.retrain_seconds:.1f} s; "
          f"whole run {total:.1f} s")
    print(rep.table())
    for m, v in rep.methods.items():
        key = m.replace(" (projection 16)", "_proj16")
        record("influence", f"lds.{key}", round(v["lds"], 3))
        record("influence", f"lds_se.{key}", round(v["se"], 3))
        record("influence", f"seconds.{key}", round(v["seconds"], 2))
    record("influence", "retrain_seconds", round(rep.retrain_seconds, 1))
    if args.out:
        Path(args.out).write_text(json.dumps(rep.to_dict(), indent=1))


if __name__ == "__main__":
    main()
