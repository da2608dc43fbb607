"""Kronfluence's side of the default-model workload, run in its own venv (see benchmarks/README.md).

    PYTHONPATH=src /work/main/.bench-venvs/kronfluence/bin/python benchmarks/_kronfluence_runner.py OUT.json

EK-FAC (Kronfluence 1.0.1) over the default model's 90 MLP linear layers: 32 training strings and 4
queries of 16 tokens (the same texts as ``influence.py --workload default-model``), the loss of each
query text as the measurement, the empirical Fisher and damping 0.1 × the mean eigenvalue (the
settings of interpretlm's defaults). Writes the scores, wall time, peak RSS and disk to OUT.json.
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

import interpretlm as il  # noqa: E402


def main() -> None:
    from influence import default_model_texts
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    warnings.simplefilter("ignore")
    lm = il.load()
    train, queries = default_model_texts(lm)
    mlp = [name for name, _ in il.influence.gradients.resolve_modules(lm, "mlp")]

    def rows(texts: list[str]) -> list[dict[str, torch.Tensor]]:
        b = lm.tokenize(texts)
        return [{"input_ids": b.input_ids[i], "attention_mask": b.attention_mask[i]} for i in range(b.size)]

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
            return mlp

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    task = LM()
    model = prepare_model(lm.model, task)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        analyzer = Analyzer(analysis_name="bench", model=model, task=task, output_dir=tmp, disable_tqdm=True, cpu=True)
        analyzer.fit_all_factors(factors_name="ekfac", dataset=rows(train), per_device_batch_size=8,
                                 factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=True),
                                 overwrite_output_dir=True)
        analyzer.compute_pairwise_scores(scores_name="s", factors_name="ekfac", query_dataset=rows(queries),
                                         train_dataset=rows(train), per_device_query_batch_size=4,
                                         per_device_train_batch_size=8, score_args=ScoreArguments(damping_factor=None),
                                         overwrite_output_dir=True)
        scores = analyzer.load_pairwise_scores("s")["all_modules"]
        seconds = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(sys.argv[1]).write_text(json.dumps({"scores": scores.tolist(), "seconds": seconds, "peak_rss_mb": peak,
                                             "disk_bytes": disk}))


if __name__ == "__main__":
    main()
