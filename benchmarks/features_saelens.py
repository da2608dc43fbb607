"""Parity with sae-lens: the same dictionaries encoded by SAELens's own code and by ours.

    PYTHONPATH=src .venv/bin/python benchmarks/features_saelens.py

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


if __name__ == "__main__":
    main()
