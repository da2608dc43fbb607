"""Peak memory of il.attention on a long prompt: one layer asked for vs all layers.

Each configuration runs in a fresh subprocess (peak RSS is per process), on the default
model, with a prompt of random token ids. Also writes the HTML view of a 512-token
prompt (all layers x heads) and reports its size.

    PYTHONPATH=src .venv/bin/python benchmarks/attention_memory.py [--tokens 2048]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402  (figures for run_all.py / results.json)

CHILD = r"""
import json, resource, sys, time, torch
import interpretlm as il
torch.manual_seed(0)
lm = il.load()
n, layers = int(sys.argv[1]), sys.argv[2]
ids = torch.randint(100, lm.vocab_size - 100, (n,)).tolist()
with torch.no_grad():
    lm.model.base_model(input_ids=torch.tensor([ids[:16]]))   # warm up, so the baseline includes the runtime
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
att = il.attention(lm, ids, layers=None if layers == "all" else [int(x) for x in layers.split(",")])
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tokens": n, "layers": layers, "kept_mb": att.diagnostics["kept_bytes"] / 2**20,
                  "peak_rss_increase_mb": (peak - base) / 1024, "seconds": dt,
                  "layers_run": att.diagnostics["layers_run"]}))
"""

HTML = r"""
import sys, time, torch
import interpretlm as il
torch.manual_seed(0)
lm = il.load()
ids = torch.randint(100, lm.vocab_size - 100, (int(sys.argv[1]),)).tolist()
att = il.attention(lm, ids)
t = time.perf_counter()
path = att.save_html(sys.argv[2])
print(f"{len(ids)} tokens, {len(att.layers)} layers x {len(att.heads)} heads: page {path.stat().st_size / 2**20:.1f} MB, "
      f"rendered to HTML in {time.perf_counter() - t:.1f} s")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--html-tokens", type=int, default=512)
    ap.add_argument("--html-out", default=str(Path(tempfile.gettempdir()) / "attention-512.html"),
                    help="where the sized page goes (default: the temp folder, not the working tree)")
    args = ap.parse_args()
    for layers in ("0", "29", "all"):
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.tokens), layers], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['tokens']} tokens, layers {r['layers']:>3}: kept patterns {r['kept_mb']:8.1f} MB, peak RSS increase "
              f"{r['peak_rss_increase_mb']:8.1f} MB, {r['layers_run']} layers run, {r['seconds']:.1f} s")
        record("attention_memory", f"{r['tokens']}.{r['layers']}.peak_rss_increase_mb", r["peak_rss_increase_mb"])
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", HTML, str(args.html_tokens), args.html_out], capture_output=True, text=True)
    print(out.stdout.strip() or out.stderr[-2000:], f"({time.perf_counter() - t:.1f} s with the forward pass)")


if __name__ == "__main__":
    main()
