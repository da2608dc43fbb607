"""Runs inside the sae-lens venv: SAELens writes a TopK and a JumpReLU SAE (its own ``save_model``) and
their activations on random inputs (``ref.safetensors``), for interpretlm's loader to read back.

    python _saelens_writer.py FOLDER
"""
import sys, torch
from sae_lens import SAE
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
out = sys.argv[1]
torch.manual_seed(0)
for name, cls, cfg in [("topk", TopKSAE, TopKSAEConfig(d_in=64, d_sae=128, k=8, apply_b_dec_to_input=True)),
                       ("jumprelu", JumpReLUSAE, JumpReLUSAEConfig(d_in=64, d_sae=128))]:
    cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    sae = cls(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        if hasattr(sae, "threshold"): sae.threshold.copy_(torch.rand_like(sae.threshold) * 0.3)
    sae.save_model(f"{out}/{name}")
    x = torch.randn(50, 64)
    from safetensors.torch import save_file
    save_file({"x": x, "f": sae.encode(x).detach().contiguous()}, f"{out}/{name}/ref.safetensors")
print("ok")
