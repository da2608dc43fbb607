"""Runs inside the sae-lens venv: train a SAELens TopK SAE on activations from a file, time it, save it.

    python _saelens_trainer.py ACTS.safetensors OUT_FOLDER N_FEATURES K STEPS BATCH LR HOOK_NAME [NORMALIZE]

ACTS holds ``train`` ``[n, d_in]``; batches are drawn from seeded shuffles of the rows, one epoch after another
(as ``il.features.fit`` draws them). Prints the training seconds (wall and CPU).
"""

import sys
import time

import torch
from safetensors.torch import load_file
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer


def main() -> None:
    acts, out, n, k, steps, batch, lr, hook = sys.argv[1:9]
    normalize = sys.argv[9] if len(sys.argv) > 9 else "none"
    n, k, steps, batch, lr = int(n), int(k), int(steps), int(batch), float(lr)
    torch.set_num_threads(1)
    x = load_file(acts)["train"]
    g = torch.Generator().manual_seed(1)

    def provider():
        while True:
            order = torch.randperm(x.shape[0], generator=g)
            for s in range(0, len(order) - batch + 1, batch):
                yield x[order[s:s + batch]]

    cfg = TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=n, k=k, normalize_activations=normalize)
    cfg.metadata.hook_name = hook
    sae = TopKTrainingSAE(cfg)
    trainer = SAETrainer(cfg=SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch,
                                              lr=lr, lr_end=lr, device="cpu", n_batches_for_norm_estimate=20),
                         sae=sae, data_provider=provider())
    t, c = time.perf_counter(), time.process_time()
    trained = trainer.fit()
    print(f"seconds {time.perf_counter() - t:.3f} cpu {time.process_time() - c:.3f}")
    if trainer.activation_scaler.scaling_factor is not None:     # folded in, so the saved SAE reads raw activations
        trained.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
        trained.cfg.normalize_activations = "none"
    trained.save_inference_model(out) if hasattr(trained, "save_inference_model") else trained.save_model(out)


if __name__ == "__main__":
    main()
