"""Latency of the web app (issue 18, point 6), measured in Chromium against a server on loopback.

* page interactive: from the start of navigation until the form is built from /api/methods
  (``body[data-ready]``), median of ``--rounds`` reloads;
* cached view: opening a saved result whose view the server has rendered before (fetch of the
  rendered fragments, insertion, layout), per kind of view, median of ``--rounds``;
* round trip: a method run through the app (submit, progress stream to the end, fetch of the
  view) minus the same call made directly in this process, medians of ``--rounds``; also minus
  the compute time the server measured for the job.

Absolute times are noisy on a shared machine; every comparison is made within one process.

    PYTHONPATH=src .venv/bin/python benchmarks/app_latency.py [--model smollm2-135m|tiny] [--rounds 5]
        [--screenshots docs/figures]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).parent))
from _results import record  # noqa: E402  (figures for run_all.py / results.json)

import interpretlm as il  # noqa: E402
from interpretlm.app import create_app  # noqa: E402

IOI = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
MARY = {"kind": "NextToken", "token": " Mary"}
CONTRAST = {"kind": "Contrast", "a": " Mary", "b": " John"}


def start(app):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, t


def run_job(client: httpx.Client, base: str, body: dict) -> tuple[float, dict]:
    """Submit, follow the progress stream to the end, fetch the view; wall seconds and the job."""
    t = time.perf_counter()
    job = client.post(f"{base}/api/jobs", json=body).json()
    last = job
    with client.stream("GET", f"{base}/api/jobs/{job['id']}/events") as s:
        for line in s.iter_lines():
            if line.startswith("data: "):
                last = json.loads(line[6:])
    assert last["state"] == "done", last
    client.get(f"{base}/api/results/{last['results'][0]}").raise_for_status()
    return time.perf_counter() - t, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="a model name for il.load, or 'tiny' (a tiny llama)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--screenshots", type=Path, default=None, help="write screenshots of the main views here")
    args = ap.parse_args()

    if args.model == "tiny":
        from interpretlm.testing import tiny_lm
        lm = tiny_lm("llama")
    else:
        lm = il.load(args.model)
    data = Path(tempfile.mkdtemp(prefix="interpretlm-app-bench-"))
    app = create_app({lm.name: lm}, data)
    base, server, thread = start(app)
    out: dict[str, float] = {}
    try:
        with httpx.Client(timeout=600) as client:
            # ------------------------------------------------ round trip vs direct compute
            direct, trips, computes = [], [], []
            il.attribute(lm, IOI, il.NextToken(" Mary"), method="saliency")  # warm up both paths
            run_job(client, base, {"method": "saliency", "prompt": IOI, "target": MARY})
            for _ in range(args.rounds):
                t = time.perf_counter()
                il.attribute(lm, IOI, il.NextToken(" Mary"), method="saliency")
                direct.append(time.perf_counter() - t)
                wall, job = run_job(client, base, {"method": "saliency", "prompt": IOI, "target": MARY})
                trips.append(wall)
                computes.append(job["compute_s"])
            out["saliency_direct_ms"] = 1000 * statistics.median(direct)
            out["saliency_round_trip_ms"] = 1000 * statistics.median(trips)
            out["round_trip_overhead_ms"] = out["saliency_round_trip_ms"] - out["saliency_direct_ms"]
            out["overhead_vs_server_compute_ms"] = 1000 * statistics.median(t - c for t, c in zip(trips, computes))

            # ------------------------------------------------ results to view
            views = {}
            for label, body in [("attribution", {"method": "integrated_gradients", "prompt": IOI, "target": MARY}),
                                ("attribution_b", {"method": "lrp", "prompt": IOI, "target": MARY}),
                                ("attention", {"method": "attention", "prompt": IOI}),
                                ("patching", {"method": "patch", "clean": IOI, "corrupted": CORRUPT,
                                              "target": CONTRAST})]:
                _, job = run_job(client, base, body)
                views[label] = job["results"][0]

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=shutil.which("chromium"),
                                  args=["--headless", "--no-sandbox", "--disable-gpu"])
            pg = b.new_page(viewport={"width": 1280, "height": 900})
            ready = []
            for _ in range(args.rounds):
                pg.goto(base + "/")
                pg.wait_for_selector("body[data-ready]")
                ready.append(float(pg.get_attribute("body", "data-ready")))
            out["page_interactive_ms"] = statistics.median(ready)
            for label in ("attribution", "attention", "patching"):
                times = []
                for _ in range(args.rounds + 1):
                    ms = pg.evaluate("async name => { await window.interpretlmApp.open(name, 'a');"
                                     " return +document.getElementById('pane-a').dataset.renderMs; }", views[label])
                    times.append(ms)
                out[f"cached_view_{label}_ms"] = statistics.median(times[1:])  # the first fills the cache
            if args.screenshots is not None:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                pg.set_viewport_size({"width": 1280, "height": 900})
                pg.goto(base + "/")
                pg.wait_for_selector("body[data-ready]")
                pg.evaluate("async v => { await window.interpretlmApp.open(v[0], 'a');"
                            " await window.interpretlmApp.open(v[1], 'b'); }",
                            [views["attribution"], views["attribution_b"]])
                pg.wait_for_timeout(300)
                pg.screenshot(path=str(args.screenshots / "app_compare.png"))
                pg.goto(base + "/")
                pg.wait_for_selector("body[data-ready]")
                pg.evaluate("async n => { await window.interpretlmApp.open(n, 'a'); }", views["attention"])
                pg.wait_for_timeout(500)
                pg.screenshot(path=str(args.screenshots / "app_attention.png"))
                pg.evaluate("async n => { await window.interpretlmApp.open(n, 'a'); }", views["patching"])
                pg.wait_for_timeout(300)
                pg.screenshot(path=str(args.screenshots / "app_patching.png"))
            b.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    print(f"model {lm.name}, medians of {args.rounds} rounds (shared machine: absolute times are noisy)")
    for k, v in out.items():
        print(f"  {k:<34} {v:8.1f}")
        record("app_latency", f"{lm.name}.{k}", round(v, 1))


if __name__ == "__main__":
    main()
