"""Throughput of il.activations against plain forward passes over the same texts.

Run by hand (not a test):

    PYTHONPATH=src .venv/bin/python benchmarks/probing_activations.py [--model smollm2-135m] [--texts 256]

Prints texts/second of
  * the plain Hugging Face forward pass (``model(input_ids, attention_mask)``, LM head included),
  * the plain base-model forward pass (no LM head: the fairest reference),
  * ``il.activations`` extracting every layer's ``resid_post`` (token level) into an
    on-disk store of shards, and the ratios (goal: >= 0.80 of the plain forward).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import interpretlm as il
from interpretlm.probing.tasks import sentences

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402  (figures for run_all.py / results.json)


def plain(lm, texts, batch_size, head: bool) -> float:
    runner = lm.model if head else lm.model.base_model
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            b = lm.tokenize(texts[s:s + batch_size])
            kw = {"input_ids": b.input_ids, "attention_mask": b.attention_mask}
            if lm.is_causal:
                kw["use_cache"] = False
            runner(**kw)
    return time.perf_counter() - t


INSIDE: dict[str, float] = {}


def extract(lm, texts, batch_size, components, pooling, key) -> float:
    """Time one extraction; also record how much of it was spent inside the model's forward.

    The share inside the forward is the throughput ratio measured on the very same batches,
    so it does not drift with the load of a shared machine the way two separate runs do.
    """
    folder = tempfile.mkdtemp(prefix="il-acts-")
    spent = {"t0": 0.0, "inside": 0.0}

    def enter(module, args, kwargs):
        spent["t0"] = time.perf_counter()

    def leave(module, args, kwargs, output):
        spent["inside"] += time.perf_counter() - spent["t0"]
    base = lm.model.base_model
    h1 = base.register_forward_pre_hook(enter, with_kwargs=True)
    h2 = base.register_forward_hook(leave, with_kwargs=True)
    try:
        t = time.perf_counter()
        store = il.activations(lm, texts, components, pooling=pooling, path=folder, batch_size=batch_size,
                               shard_size=64, progress=False)
        dt = time.perf_counter() - t
        size = sum(p.stat().st_size for p in store.path.iterdir())
        INSIDE[key] = max(INSIDE.get(key, 0.0), spent["inside"] / dt)
        print(f"    store: {len(store.components)} components, {store[store.components[-1]].shape[0]} rows, "
              f"{size / 1e6:.0f} MB on disk; {spent['inside'] / dt:.1%} of the time inside the forward pass")
        return dt
    finally:
        h1.remove()
        h2.remove()
        shutil.rmtree(folder, ignore_errors=True)


def interleaved(lm, texts, batch_size, pooling, rounds: int = 2) -> tuple[float, float]:
    """Plain base-model forward and full extraction (capture, gather, safetensors write) of the
    same batch, alternated batch by batch, so both see the same machine load."""
    from safetensors.torch import save_file

    from interpretlm.probing.store import _run_shard, expand_components
    names = expand_components(lm, "resid_post", "all")
    folder = tempfile.mkdtemp(prefix="il-acts-")
    t_plain = t_ext = 0.0
    try:
        for _ in range(rounds):
            for s in range(0, len(texts), batch_size):
                chunk = texts[s:s + batch_size]
                t_plain += plain(lm, chunk, batch_size, head=False)
                t = time.perf_counter()
                shard = _run_shard(lm, chunk, names, pooling, None, batch_size, torch.float32, None)
                save_file(shard, f"{folder}/b{s}.safetensors")
                t_ext += time.perf_counter() - t
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return t_plain, t_ext


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--texts", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    lm = il.load(args.model)
    texts = sentences(args.texts, seed=0)
    plain(lm, texts[:32], args.batch_size, True)   # warm-up
    best = {}
    for _ in range(args.repeats):
        for key, fn in [("forward (with LM head)", lambda: plain(lm, texts, args.batch_size, True)),
                        ("forward (base model)", lambda: plain(lm, texts, args.batch_size, False)),
                        ("il.activations resid_post, all layers, tokens", lambda: extract(
                            lm, texts, args.batch_size, "resid_post", "none", "tokens")),
                        ("il.activations resid_post, all layers, mean-pooled", lambda: extract(
                            lm, texts, args.batch_size, "resid_post", "mean", "mean-pooled"))]:
            dt = fn()
            best[key] = min(best.get(key, float("inf")), dt)
    print(f"\n{lm.name}: {len(texts)} texts, batch {args.batch_size}, {torch.get_num_threads()} threads (best of "
          f"{args.repeats})")
    for key, dt in best.items():
        print(f"  {key:52s} {len(texts) / dt:7.1f} texts/s")
    for pooling in ("none", "mean"):
        tp, te = interleaved(lm, texts, args.batch_size, pooling)
        print(f"  interleaved batch by batch ({pooling:4s}): plain forward {len(texts) * 2 / tp:6.1f} texts/s, "
              f"extraction + write {len(texts) * 2 / te:6.1f} texts/s, ratio {tp / te:.2f}  (goal >= 0.80)")
    ref_head, ref_base = best["forward (with LM head)"], best["forward (base model)"]
    for key in [k for k in best if k.startswith("il.")]:
        print(f"  throughput ratio {key[15:]:36s} vs forward with head {ref_head / best[key]:.2f}, "
              f"vs base-model forward {ref_base / best[key]:.2f}  (goal >= 0.80)")
        record("probing", f"{key}.throughput_ratio", ref_head / best[key])
    for key, share in INSIDE.items():
        print(f"  same batches, forward time / extraction time ({key}): {share:.2f}  (goal >= 0.80; "
              "robust to machine load)")


if __name__ == "__main__":
    main()
