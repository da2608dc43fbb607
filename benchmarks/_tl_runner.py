"""Activation patching with TransformerLens 4.3 in its own venv; used by benchmarks/patching.py.

TransformerLens 4.3 loads SmolLM2 (a Llama model) through its model bridge
(``TransformerBridge.boot_transformers``) from the local HF folder that ``il.load()`` writes,
with the raw HF weights (``enable_compatibility_mode(no_processing=True)`` only adds the
legacy hook names ``blocks.L.hook_resid_pre`` / ``blocks.L.attn.hook_z`` that its
``patching`` functions use). The grids are TransformerLens's own functions:
``get_act_patch_resid_pre`` (``[layer, pos]``) and ``get_act_patch_attn_head_out_all_pos``
(``[layer, head]``), one forward pass per patch, on the exact token ids interpretlm used
(no BOS is prepended: the ids come from the caller).

    python _tl_runner.py JOB_JSON OUT_JSON

JOB_JSON: {"model_dir", "threads", "grids": [...], "pairs": [{"clean", "corrupted", "a", "b"}]}
(token id lists; ``a``/``b`` the contrast tokens). OUT_JSON gets, per pair and grid, the
normalised effect ``(patched - corrupted) / (clean - corrupted)`` of ``logit(a) - logit(b)``
at the last position, the seconds the patching function took, and the median seconds of one
plain forward pass in the same process (so ratios can be taken against the machine's speed
at that moment).
"""

import importlib.metadata
import json
import statistics
import sys
import time

import torch
from _peer_job import load_job


def main() -> None:
    job, tok, hf = load_job()
    import transformer_lens.patching as patching
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(job["model_dir"], hf_model=hf, tokenizer=tok, device="cpu")
    model.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    model.eval()
    grids = {"resid_pre": patching.get_act_patch_resid_pre, "heads": patching.get_act_patch_attn_head_out_all_pos}
    out = {"library": f"transformer_lens {importlib.metadata.version('transformer-lens')}",
           "torch": torch.__version__, "pairs": []}
    with torch.no_grad():
        for pair in job["pairs"]:
            clean = torch.tensor([pair["clean"]])
            corrupted = torch.tensor([pair["corrupted"]])
            a, b = pair["a"], pair["b"]

            def logit_diff(logits: torch.Tensor) -> torch.Tensor:
                return logits[0, -1, a] - logits[0, -1, b]

            ts = []
            for _ in range(3):
                t = time.perf_counter()
                corrupted_logits = model(corrupted)
                ts.append(time.perf_counter() - t)
            clean_logits, clean_cache = model.run_with_cache(clean)
            clean_v, corrupt_v = float(logit_diff(clean_logits)), float(logit_diff(corrupted_logits))

            def metric(logits: torch.Tensor) -> torch.Tensor:
                return (logit_diff(logits) - corrupt_v) / (clean_v - corrupt_v)

            row = {"forward_seconds": statistics.median(ts), "clean": clean_v, "corrupted": corrupt_v}
            for g in job["grids"]:
                t = time.perf_counter()
                grid = grids[g](model, corrupted, clean_cache, metric)
                row[g] = {"seconds": time.perf_counter() - t, "effect": grid.tolist()}
            out["pairs"].append(row)
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
