"""bergson's side of the LDS workload, run in its own venv (see benchmarks/README.md).

    /work/main/.bench-venvs/bergson/bin/python benchmarks/_bergson_runner.py MODEL_DIR TRAIN.jsonl QUERIES.jsonl OUT.json

EK-FAC (bergson 2.5.1's ``bergson ekfac`` pipeline: K-FAC factors with the eigenvalue correction,
its defaults otherwise: every linear layer of the decoder blocks, labels sampled from the model,
damping 0.1 × the mean eigenvalue) on the tiny model that ``influence.py`` trained and saved in
MODEL_DIR, one score per (query, training text): the query gradients are not aggregated. Writes
``{"scores": [n_query][n_train], "seconds": wall time of the pipeline in this process}`` to OUT.json.
Positive scores are proponents (bergson's ``higher_is_better``), as in interpretlm.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from bergson.__main__ import main as bergson_main
    from bergson.data import load_scores

    model, train, queries, out = sys.argv[1:5]
    torch.set_num_threads(1)  # the same thread budget as interpretlm's side
    with tempfile.TemporaryDirectory() as tmp:
        run = str(Path(tmp) / "run")
        # the tiny model's context is 256 tokens: bergson's token batches must fit in it
        sys.argv = ["bergson", "ekfac", run, "--model", model, "--data.dataset", train, "--query.dataset", queries,
                    "--query.split", "train", "--query.aggregation", "none", "--method", "kfac",
                    "--hessian_cfg.ev_correction", "true", "--nproc_per_node", "1", "--token_batch_size", "256"]
        t0 = time.perf_counter()
        bergson_main()
        seconds = time.perf_counter() - t0
        m = load_scores(Path(run) / "scores").mmap
        n_query = sum(1 for name in m.dtype.names if name.startswith("score_"))
        if not all(bool(np.asarray(m[f"written_{q}"]).all()) for q in range(n_query)):
            raise RuntimeError("bergson left some scores unwritten")
        scores = [np.asarray(m[f"score_{q}"], dtype=np.float64).tolist() for q in range(n_query)]
    Path(out).write_text(json.dumps({"scores": scores, "seconds": seconds}))


if __name__ == "__main__":
    main()
