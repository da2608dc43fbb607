"""What every peer runner (``_tl_runner.py``, ``_nnsight_runner.py``) starts with, in its own venv.

Imports only torch and transformers, which every peer venv has; interpretlm is not needed there.
"""

import json
import sys
import warnings

import torch


def load_job():
    """``(job, tokenizer, hf_model)`` from the JOB_JSON given as the first argument: the job's
    thread count applied, warnings silenced, the local HF folder loaded in float32."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    with open(sys.argv[1]) as f:
        job = json.load(f)
    torch.set_num_threads(int(job["threads"]))
    warnings.filterwarnings("ignore")
    tok = AutoTokenizer.from_pretrained(job["model_dir"])
    hf = LlamaForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32).eval()
    return job, tok, hf
