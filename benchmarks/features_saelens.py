"""Parity with sae-lens: the same dictionaries encoded by SAELens's own code and by ours.

    PYTHONPATH=src .venv/bin/python benchmarks/features_saelens.py
    PYTHONPATH=src .venv/bin/python benchmarks/features_saelens.py --train ACTS.safetensors   # training, both

Writes a TopK, a JumpReLU and a standard (ReLU) SAE in SAELens format with ``Dictionary.save``,
loads each with ``sae_lens.SAE.load_from_disk`` in its own venv (``.bench-venvs/saelens``: sae-lens
pins transformers < 5 and transformer-lens < 4, so it cannot live in ours), encodes and decodes the
same inputs there and here, and prints the largest differences (goal: 1e-5); then the other way:
SAELens writes a TopK and a JumpReLU SAE with its own ``save_model`` and ``il.features.load`` reads them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from interpretlm.features import Dictionary

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402

VENV = Path(os.environ.get("INTERPRETLM_BENCH_VENVS", "/work/main/.bench-venvs")) / "saelens" / "bin" / "python"


def main() -> None:
    d, n = 576, 2048
    g = torch.Generator().manual_seed(0)
    saes = {"topk": Dictionary.random(d, n, component="blocks.9.resid_post", k=32, seed=1),
            "jumprelu": Dictionary.random(d, n, component="blocks.9.resid_post", activation="jumprelu", seed=2),
            "standard": Dictionary.random(d, n, component="blocks.9.resid_post", activation="relu", seed=3)}
    for s in saes.values():
        s.b_enc = torch.randn(n, generator=g) * 0.1
        s.b_dec = torch.randn(d, generator=g) * 0.1
        if s.threshold is not None:
            s.threshold = torch.rand(n, generator=g) * 0.5
    x = torch.randn(256, d, generator=g) * 2
    with tempfile.TemporaryDirectory() as tmp:
        folders = [str(s.save(Path(tmp) / name)) for name, s in saes.items()]
        save_file({"x": x}, f"{tmp}/x.safetensors")
        done = subprocess.run([str(VENV), str(Path(__file__).parent / "_saelens_runner.py"), f"{tmp}/x.safetensors",
                               f"{tmp}/out.safetensors", *folders], capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        theirs = load_file(f"{tmp}/out.safetensors")
    # the other way: dictionaries written by SAELens itself, read by il.features.load
    import interpretlm as il
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([str(VENV), str(Path(__file__).parent / "_saelens_writer.py"), tmp],
                              capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        for name in ("topk", "jumprelu"):
            ref = load_file(f"{tmp}/{name}/ref.safetensors")
            diff = float((il.features.load(f"{tmp}/{name}").encode(ref["x"]) - ref["f"]).abs().max())
            print(f"SAELens-written {name}: il.features.load encodes with max |diff| {diff:.2e}")
            record("features", f"saelens.written_{name}.encode_max_diff", diff)
    for i, (name, s) in enumerate(saes.items()):
        f = s.encode(x)
        enc = float((f - theirs[f"enc.{i}"]).abs().max())
        dec = float((s.decode(f) - theirs[f"dec.{i}"]).abs().max())
        print(f"{name:9s} encode max |diff| {enc:.2e}  decode max |diff| {dec:.2e}  (active per row {float((f != 0).sum(-1).float().mean()):.1f})")
        record("features", f"saelens.{name}.encode_max_diff", enc)
        record("features", f"saelens.{name}.decode_max_diff", dec)


def train_compare(acts: str, n: int = 2048, k: int = 32, steps: int = 120, batch: int = 512, lr: float = 4e-4) -> None:
    """Both trainers on the same activations (``acts``: ``train`` / ``eval`` rows of the default model's
    blocks.9.resid_post, windows of 64 with the first token left out, as ``il.features.train`` reads them),
    the same steps, batch and learning rate; metrics on the held-out rows and CE loss recovered on the
    held-out windows."""
    import time

    import interpretlm as il
    from interpretlm.features.train import Trainer, _windows, reconstruction_metrics

    torch.set_num_threads(1)
    data = load_file(acts)
    x, xe = data["train"], data["eval"]
    g = torch.Generator().manual_seed(1)
    t = Trainer(x.shape[1], n, k, lr=lr, dead_after=10 ** 9)
    start, cpu = time.perf_counter(), time.process_time()
    order, pos = torch.randperm(x.shape[0], generator=g), 0
    for _ in range(steps):
        if pos + batch > len(order):
            order, pos = torch.randperm(x.shape[0], generator=g), 0
        t.step(x[order[pos:pos + batch]])
        pos += batch
    ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
    ours = t.dictionary(component="blocks.9.resid_post")
    runs = [("interpretlm", ours, ours_s, ours_cpu)]
    # sae-lens with its defaults (raw activations) and with its activation normalisation (folded in after training)
    for label, norm in (("sae-lens", "none"), ("sae-lens-normalized", "expected_average_only_in")):
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run([str(VENV), str(Path(__file__).parent / "_saelens_trainer.py"), acts, f"{tmp}/sl",
                                   str(n), str(k), str(steps), str(batch), str(lr), "blocks.9.hook_resid_post", norm],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            words = done.stdout.split()
            runs.append((label, il.features.load(f"{tmp}/sl"), float(words[words.index("seconds") + 1]),
                         float(words[words.index("cpu") + 1])))
    lm = il.load()
    windows = [ids for _, ids in _windows(il.corpus("builtin"), lm.tokenizer, 64, 0, 32)]
    for name, sae, secs, cpus in runs:
        m = reconstruction_metrics(sae, xe)
        dead = float((sae.encode(xe) == 0).all(0).float().mean())
        ce = il.features.evaluate(lm, sae, windows)
        print(f"{name:12s} {steps} steps x {batch}: {secs:.1f} s wall, {cpus:.1f} s CPU; held-out FVU {m['fvu']:.3f}, "
              f"L0 {m['l0']:.1f}, never active on held-out {dead:.1%}, CE loss recovered {ce['ce_loss_recovered']:.3f}")
        for key, v in (("seconds", secs), ("cpu_seconds", cpus), ("fvu", m["fvu"]), ("l0", m["l0"]),
                       ("never_active", dead), ("ce_loss_recovered", ce["ce_loss_recovered"])):
            record("features", f"train_vs.{name}.{key}", round(float(v), 4))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--train":
        train_compare(sys.argv[2])
    else:
        main()
