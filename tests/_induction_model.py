"""A tiny Llama trained to do induction, for the ground-truth tests of circuit analysis.

The repeated segment's length and both offsets vary per example and positions are rotary,
so the model cannot learn a positional shortcut: it learns the two-head circuit (a
previous-token head in layer 0, induction heads in layer 1).
"""

from __future__ import annotations

import time

import torch

from interpretlm.model import LM
from interpretlm.testing import tiny_tokenizer

SEQ = 24
LOW, HIGH = 20, 276  # token ids drawn for random sequences (plain BPE pieces of the tiny tokenizer)


def induction_batch(n: int, g: torch.Generator, seq: int = SEQ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, seq]`` random tokens with a segment copied later; ``[n, seq]`` loss mask on the copy."""
    x = torch.randint(LOW, HIGH, (n, seq), generator=g)
    mask = torch.zeros(n, seq, dtype=torch.bool)
    for i in range(n):
        k = int(torch.randint(3, 9, (1,), generator=g))
        o1 = int(torch.randint(0, seq - 2 * k, (1,), generator=g))
        o2 = int(torch.randint(o1 + k, seq - k + 1, (1,), generator=g))
        x[i, o2:o2 + k] = x[i, o1:o1 + k]
        mask[i, o2 + 1:o2 + k] = True  # positions whose token is predictable by induction
    return x, mask


def train_induction_lm(seed: int = 0, steps: int = 3000, seconds: float | None = None, lr: float = 1e-3, batch: int = 16,
                       log: bool = False) -> tuple[LM, dict]:
    import transformers as tf

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and leaves the other core free
    torch.manual_seed(seed)
    tok = tiny_tokenizer("bpe")
    cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, max_position_embeddings=64, vocab_size=len(tok),
                         rope_theta=10000.0, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                         attn_implementation="eager")
    model = tf.LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    step, ema = 0, None
    for step in range(steps):
        x, mask = induction_batch(batch, g)
        logits = model(input_ids=x).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits[mask[:, 1:]], x[:, 1:][mask[:, 1:]])
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema = float(loss.detach()) if ema is None else 0.9 * ema + 0.1 * float(loss.detach())
        if ema < 0.2:  # induction has formed (a chance-level copy loss is ~3)
            break
        if log and step % 200 == 0:
            print(step, round(time.perf_counter() - t0, 1), float(loss.detach()), flush=True)
        # no time cap by default: a model trained for a wall-clock budget would depend on the machine's load
        if seconds is not None and time.perf_counter() - t0 > seconds:
            break
    torch.set_num_threads(threads)
    model.eval().requires_grad_(False)
    with torch.no_grad():
        x, mask = induction_batch(256, torch.Generator().manual_seed(seed + 1))
        pred = model(input_ids=x).logits[:, :-1].argmax(-1)
        acc = float((pred[mask[:, 1:]] == x[:, 1:][mask[:, 1:]]).float().mean())
    return LM(model, tok, name="tiny-induction"), {"steps": step + 1, "seconds": time.perf_counter() - t0,
                                                   "accuracy": acc, "loss": float(loss.detach())}


if __name__ == "__main__":
    # Train once and print the training figures and previous-token scores (used for the README):
    #   PYTHONPATH=src:tests python tests/_induction_model.py
    lm, stats = train_induction_lm(log=True)
    print(stats)
    x, _ = induction_batch(64, torch.Generator().manual_seed(5))
    with lm.capture([f"blocks.{i}.attn.pattern" for i in range(2)]) as cache:
        lm.forward(x)
    for layer in range(2):
        p = cache[f"blocks.{layer}.attn.pattern"]
        prev = torch.stack([p[:, h].diagonal(-1, dim1=-2, dim2=-1).mean() for h in range(4)])
        print(f"previous-token score, layer {layer}:", [round(float(v), 3) for v in prev])
