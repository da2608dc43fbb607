"""Activation patching with nnsight 0.8 in its own venv; used by benchmarks/patching.py.

The loop nnsight's activation-patching tutorial teaches: one ``model.trace`` for the clean run
that saves the activations, then, for every patch, a ``model.trace`` of the corrupted prompt
that writes the clean activation in and saves the logit difference. The model is the local
HF folder that ``il.load()`` writes, wrapped by ``nnsight.LanguageModel``; the inputs are the
exact token ids interpretlm used. Grids:

- ``resid_pre`` ``[layer, pos]``: the input of decoder layer ``L`` at one position;
- ``heads`` ``[layer, head]``: one head's slice of the input of ``self_attn.o_proj`` (the
  per-head outputs, TransformerLens's ``hook_z``) at every position.

    python _nnsight_runner.py JOB_JSON OUT_JSON

JOB_JSON and OUT_JSON as in ``_tl_runner.py``.
"""

import json
import statistics
import sys
import time

import torch
from _peer_job import load_job


def main() -> None:
    job, tok, hf = load_job()
    import nnsight
    from nnsight import LanguageModel

    model = LanguageModel(hf, tokenizer=tok)
    layers = model.model.layers
    n_layers, n_heads = hf.config.num_hidden_layers, hf.config.num_attention_heads
    d_head = hf.config.hidden_size // n_heads
    out = {"library": f"nnsight {nnsight.__version__}", "torch": torch.__version__, "pairs": []}
    with torch.no_grad():
        for pair in job["pairs"]:
            clean = torch.tensor([pair["clean"]])
            corrupted = torch.tensor([pair["corrupted"]])
            a, b = pair["a"], pair["b"]
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                hf(corrupted)
                ts.append(time.perf_counter() - t)
            # the clean run, saving every activation a patch will need (modules in execution order)
            resid, z = [], []  # filled inside the trace (lists, as the tutorial does)
            with model.trace(clean):
                for l in range(n_layers):
                    if "resid_pre" in job["grids"]:
                        resid.append(layers[l].input.save())
                    if "heads" in job["grids"]:
                        z.append(layers[l].self_attn.o_proj.input.save())
                logits = model.lm_head.output
                clean_diff = (logits[0, -1, a] - logits[0, -1, b]).save()
            with model.trace(corrupted):
                logits = model.lm_head.output
                corrupt_diff = (logits[0, -1, a] - logits[0, -1, b]).save()
            clean_v, corrupt_v = float(clean_diff), float(corrupt_diff)
            row = {"forward_seconds": statistics.median(ts), "clean": clean_v, "corrupted": corrupt_v}
            n_pos = clean.shape[1]
            if "resid_pre" in job["grids"]:
                t = time.perf_counter()
                grid = []
                for l in range(n_layers):
                    grid_row = []
                    for p in range(n_pos):
                        with model.trace(corrupted):
                            layers[l].input[:, p, :] = resid[l][:, p, :]
                            logits = model.lm_head.output
                            d = (logits[0, -1, a] - logits[0, -1, b]).save()
                        grid_row.append((float(d) - corrupt_v) / (clean_v - corrupt_v))
                    grid.append(grid_row)
                row["resid_pre"] = {"seconds": time.perf_counter() - t, "effect": grid}
            if "heads" in job["grids"]:
                t = time.perf_counter()
                grid = []
                for l in range(n_layers):
                    grid_row = []
                    for h in range(n_heads):
                        s = slice(h * d_head, (h + 1) * d_head)
                        with model.trace(corrupted):
                            layers[l].self_attn.o_proj.input[:, :, s] = z[l][:, :, s]
                            logits = model.lm_head.output
                            d = (logits[0, -1, a] - logits[0, -1, b]).save()
                        grid_row.append((float(d) - corrupt_v) / (clean_v - corrupt_v))
                    grid.append(grid_row)
                row["heads"] = {"seconds": time.perf_counter() - t, "effect": grid}
            out["pairs"].append(row)
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
