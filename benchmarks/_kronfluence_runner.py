"""Kronfluence's side of the influence workloads, run in its own venv (see benchmarks/README.md).

    PYTHONPATH=src /work/main/.bench-venvs/kronfluence/bin/python benchmarks/_kronfluence_runner.py OUT.json
    /work/main/.bench-venvs/kronfluence/bin/python benchmarks/_kronfluence_runner.py lds MODEL_DIR TRAIN.jsonl \
        QUERIES.jsonl MODULES.json FISHER OUT.json

Default-model workload: EK-FAC (Kronfluence 1.0.1) over the default model's 90 MLP linear layers:
32 training strings and 4 queries of 16 tokens (the same texts as ``influence.py --workload
default-model``), the loss of each query text as the measurement, the empirical Fisher and damping
0.1 × the mean eigenvalue (the settings of interpretlm's defaults). Writes the scores, wall time,
peak RSS and disk to OUT.json.

LDS workload (``lds``): EK-FAC on the tiny model ``influence.py`` trained and saved in MODEL_DIR,
over the linear layers named in MODULES.json, with FISHER ``"empirical"`` (the training tokens' own
labels, as interpretlm's default) or ``"sampled"`` (labels drawn from the model, Kronfluence's
default); damping 0.1 × the mean eigenvalue (Kronfluence's heuristic). Writes ``{"scores":
[n_query][n_train], "seconds"}``: the measurement and training loss are each text's summed
next-token loss, as in interpretlm, so a positive score is a proponent in both.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_task(tracked: list[str]):
    """A Kronfluence task: each text's summed next-token loss, for training and measurement alike."""
    from kronfluence.task import Task

    class LM(Task):
        def _loss(self, batch, model, sample=False):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            ids, mask = batch["input_ids"][:, 1:], (batch["attention_mask"][:, 1:] * batch["attention_mask"][:, :-1])
            if sample:
                with torch.no_grad():
                    ids = torch.multinomial(torch.softmax(logits.reshape(-1, logits.shape[-1]), -1), 1).reshape(ids.shape)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1), reduction="none")
            return (nll * mask.reshape(-1)).sum()

        def compute_train_loss(self, batch, model, sample=False):
            return self._loss(batch, model, sample)

        def compute_measurement(self, batch, model):
            return self._loss(batch, model)

        def get_influence_tracked_modules(self):
            return tracked

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return LM()


def ekfac_scores(model, task, train_rows, query_rows, tmp: str, empirical: bool, query_batch: int) -> torch.Tensor:
    """``[n_query, n_train]`` Kronfluence EK-FAC scores, damping by its heuristic (0.1 × mean eigenvalue)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments

    model = prepare_model(model, task)
    analyzer = Analyzer(analysis_name="bench", model=model, task=task, output_dir=tmp, disable_tqdm=True, cpu=True)
    analyzer.fit_all_factors(factors_name="ekfac", dataset=train_rows, per_device_batch_size=8,
                             factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=empirical),
                             overwrite_output_dir=True)
    analyzer.compute_pairwise_scores(scores_name="s", factors_name="ekfac", query_dataset=query_rows,
                                     train_dataset=train_rows, per_device_query_batch_size=query_batch,
                                     per_device_train_batch_size=8, score_args=ScoreArguments(damping_factor=None),
                                     overwrite_output_dir=True)
    return analyzer.load_pairwise_scores("s")["all_modules"]


def rows(tokenizer, texts: list[str]) -> list[dict[str, torch.Tensor]]:
    b = tokenizer(texts, padding=True, return_tensors="pt")
    return [{"input_ids": b["input_ids"][i], "attention_mask": b["attention_mask"][i]} for i in range(len(texts))]


def lds_side(folder: str, train_file: str, query_file: str, modules_file: str, fisher: str, out: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)  # the same thread budget as interpretlm's side
    read = lambda f: [json.loads(ln)["text"] for ln in Path(f).read_text().splitlines() if ln.strip()]  # noqa: E731
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    train, queries = read(train_file), read(query_file)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = ekfac_scores(model, make_task(json.loads(Path(modules_file).read_text())), rows(tokenizer, train),
                         rows(tokenizer, queries), tmp, fisher == "empirical", query_batch=len(queries))
        seconds = time.perf_counter() - t0
    Path(out).write_text(json.dumps({"scores": s.tolist(), "seconds": seconds}))


def default_model_side(out: str) -> None:
    import interpretlm as il
    from influence import default_model_texts

    lm = il.load()
    train, queries = default_model_texts(lm)
    mlp = [name for name, _ in il.influence.gradients.resolve_modules(lm, "mlp")]

    def lm_rows(texts: list[str]) -> list[dict[str, torch.Tensor]]:
        b = lm.tokenize(texts)
        return [{"input_ids": b.input_ids[i], "attention_mask": b.attention_mask[i]} for i in range(b.size)]

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scores = ekfac_scores(lm.model, make_task(mlp), lm_rows(train), lm_rows(queries), tmp, True, query_batch=4)
        seconds = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps({"scores": scores.tolist(), "seconds": seconds, "peak_rss_mb": peak,
                                     "disk_bytes": disk}))


def main() -> None:
    warnings.simplefilter("ignore")
    if sys.argv[1] == "lds":
        lds_side(*sys.argv[2:8])
    else:
        default_model_side(sys.argv[1])


if __name__ == "__main__":
    main()
