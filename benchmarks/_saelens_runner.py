"""Runs inside the sae-lens venv: load dictionaries with SAELens's own loader and encode / decode inputs.

    python _saelens_runner.py IN.safetensors OUT.safetensors FOLDER [FOLDER ...]

IN holds ``x`` ``[n, d_in]``; OUT gets ``enc.<i>`` and ``dec.<i>`` for the i-th folder.
"""

import sys

import torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE


def main() -> None:
    src, dst, folders = sys.argv[1], sys.argv[2], sys.argv[3:]
    x = load_file(src)["x"]
    out = {}
    for i, folder in enumerate(folders):
        sae = SAE.load_from_disk(folder, device="cpu")
        with torch.no_grad():
            f = sae.encode(x)
            out[f"enc.{i}"] = f.contiguous()
            out[f"dec.{i}"] = sae.decode(f).contiguous()
    save_file(out, dst)


if __name__ == "__main__":
    main()
