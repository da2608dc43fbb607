"""A small student language model trained on the teacher's soft outputs (Hinton et al., 2015).

The loss at every real token position is ``(1 - alpha) · T² · KL(p_teacher^T ‖ p_student^T)
+ alpha · CE(student, the text's own next token)``; the ``T²`` factor keeps the soft term's
gradients on the scale of the hard term's as the temperature ``T`` changes. The student is a
Llama-like decoder (a BERT-like encoder for an encoder teacher) of the user's size, with the
teacher's tokenizer and vocabulary. Training runs on the teacher's device with a progress
bar; with ``path`` it writes resumable safetensors checkpoints (weights, optimizer moments,
step) and saves the final student as a Hugging Face folder that ``il.load(path)`` opens.

Batches are drawn by a generator seeded with ``(seed, step)``, so a run resumed from a
checkpoint continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..model import LM
from ..progress import track
from ..registry import CheckSpec, register
from ..results import atomic_write
from .errors import DistillationError
from .result import Student


def _texts(data: Any) -> list[str]:
    """Texts from a list / iterable of strings, a task (its texts) or a corpus object (iterated)."""
    if isinstance(data, str):
        raise DistillationError("A student needs several texts (a list, a task or a corpus), not one string.")
    if hasattr(data, "texts") and not isinstance(data, (list, tuple)):
        data = data.texts
    if not isinstance(data, Iterable):
        raise DistillationError(f"A student trains on texts; got {type(data).__name__}.")
    out = []
    for i, t in enumerate(data):
        t = getattr(t, "text", t)
        if not isinstance(t, str):
            raise DistillationError(f"Item {i} of the texts is a {type(t).__name__}, not a string.")
        if t.strip():
            out.append(t)
    if len(out) < 2:
        raise DistillationError(f"{len(out)} non-empty text(s): a student needs at least 2 (one to train on, one held "
                                "out to measure agreement); better, thousands.")
    return out


def student_config(lm: LM, *, layers: int, d_model: int, heads: int, d_mlp: int | None, vocab_size: int | None,
                   n_ctx: int) -> Any:
    """A Hugging Face config for the student: Llama-like for a decoder teacher, BERT-like for an encoder."""
    import transformers as tf

    if vocab_size is not None and vocab_size != lm.vocab_size:
        raise DistillationError(f"vocab_size={vocab_size} does not match the teacher's tokenizer "
                                f"({lm.vocab_size} ids): the student reads the teacher's tokens and matches its "
                                "distribution over them, so leave vocab_size=None.")
    for name, v in (("layers", layers), ("d_model", d_model), ("heads", heads)):
        if not isinstance(v, int) or v < 1:
            raise DistillationError(f"{name}={v!r} must be a positive integer.")
    if d_model % heads:
        raise DistillationError(f"d_model={d_model} is not divisible by heads={heads}.")
    d_mlp = d_mlp or 4 * d_model
    tok = lm.tokenizer
    if lm.is_causal:
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return tf.LlamaConfig(vocab_size=lm.vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
                              num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                              max_position_embeddings=n_ctx, tie_word_embeddings=True, attention_dropout=0.0,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=pad,
                              architectures=["LlamaForCausalLM"])
    return tf.BertConfig(vocab_size=lm.vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=n_ctx,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=tok.pad_token_id,
                         architectures=["BertForMaskedLM"])


def _build(config: Any) -> torch.nn.Module:
    import transformers as tf

    klass = tf.LlamaForCausalLM if config.model_type == "llama" else tf.BertForMaskedLM
    return klass(config)


def _batch(lm: LM, rows: list[list[int]], mask_id: int | None, rng: torch.Generator | None,
           mask_p: float) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """A right-padded batch of token rows; encoders get ``mask_p`` of their tokens masked.

    Returns the batch, the real (non-pad) positions ``[batch, pos]`` and the original ids."""
    b = lm.tokenize(rows, add_special_tokens=False)
    ids = b.input_ids.clone()
    real = b.attention_mask.bool()
    if mask_id is not None and rng is not None:
        hit = (torch.rand(ids.shape, generator=rng) < mask_p) & real & ~b.special.bool()
        b.input_ids = torch.where(hit, torch.full_like(ids, mask_id), ids)
    return b, real, ids


def _soft_loss(t_logits: torch.Tensor, s_logits: torch.Tensor, keep: torch.Tensor, T: float) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over the kept positions."""
    t = torch.log_softmax(t_logits[keep].float() / T, -1)
    s = torch.log_softmax(s_logits[keep].float() / T, -1)
    return (T * T) * (t.exp() * (t - s)).sum(-1).mean()


def _save_checkpoint(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)  # tied to the embedding: safetensors refuses shared storage
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(weights, tmp))
    sd = opt.state_dict()
    moments = {f"{i}.{k}": v.contiguous() for i, st in sd["state"].items() for k, v in st.items()
               if isinstance(v, torch.Tensor)}
    atomic_write(folder / "optimizer.safetensors", lambda tmp: save_file(moments, tmp))
    atomic_write(folder / "state.json", lambda tmp: Path(tmp).write_text(json.dumps(state)))


def _load_checkpoint(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    moments = load_file(str(folder / "optimizer.safetensors"))
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in moments.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)
    return json.loads((folder / "state.json").read_text())


def _agreement_check(r: Student) -> float | None:
    return r.diagnostics.get("agreement")


@register("student", verb="distill", family="model distillation", takes="dataset", result=Student, target="none",
          summary="a small student LM trained on the teacher's soft outputs (Hinton), with agreement and KL",
          check=CheckSpec("agreement", 0.5, higher_is_better=True, read=_agreement_check,
                          advice="the student's top-1 token agrees with the teacher's on too few held-out tokens: "
                                 "train longer (steps), on more text, or a larger student."))
def student(lm: LM, texts: Any, *, layers: int = 2, d_model: int = 128, heads: int = 4, d_mlp: int | None = None,
            vocab_size: int | None = None, temperature: float = 2.0, alpha: float = 0.0, steps: int = 200,
            batch_size: int = 8, seq_len: int = 64, lr: float = 3e-3, test_size: float = 0.2, mask_p: float = 0.15,
            path: str | None = None, checkpoint_every: int = 100, seed: int = 0) -> Student:
    """Train a small student on the teacher's soft next-token distributions; measure agreement and KL.

    Args:
        lm: the teacher.
        texts: a list or iterable of texts, a task (its texts) or a corpus (iterated).
        layers, d_model, heads, d_mlp: the student's size (``d_mlp`` default ``4 · d_model``).
        vocab_size: must be ``None`` or the teacher's (the student shares its tokenizer).
        temperature: ``T`` of the soft targets; the soft term is scaled by ``T²``.
        alpha: weight of the hard-label term (cross-entropy with the text's own tokens).
        steps, batch_size, seq_len, lr: the training budget (AdamW, warm-up then cosine decay).
        test_size: fraction of texts held out for agreement and KL.
        mask_p: encoder teachers only: fraction of tokens replaced by ``[MASK]``.
        path: a folder: resumable checkpoints in ``path/checkpoint`` every
            ``checkpoint_every`` steps, and the final student (``il.load(path)``).
        seed: the split, the initialisation and the batches.

    Returns:
        a :class:`~interpretlm.distillation.result.Student`: ``agreement``, ``kl``, the loss
        curve; ``.lm`` is the student as an :class:`~interpretlm.LM` (in memory).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm, CORPUS
        >>> s = il.distill(tiny_lm("llama"), CORPUS, into="student", layers=1, d_model=32, steps=5)
        >>> 0.0 <= s.agreement <= 1.0 and s.kl >= 0
        True
    """
    texts = _texts(texts)
    if not 0 < temperature:
        raise DistillationError(f"temperature={temperature} must be positive.")
    if not 0 <= alpha <= 1:
        raise DistillationError(f"alpha={alpha} must be between 0 and 1.")
    if not isinstance(steps, int) or steps < 0:
        raise DistillationError(f"steps={steps!r} must be a non-negative integer.")
    n_ctx = max(seq_len, 8)
    config = student_config(lm, layers=layers, d_model=d_model, heads=heads, d_mlp=d_mlp, vocab_size=vocab_size,
                            n_ctx=n_ctx)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(texts), generator=g).tolist()
    n_test = min(len(texts) - 1, max(1, round(test_size * len(texts))))
    test_ids, train_ids = order[:n_test], order[n_test:]
    rows = [lm.tokenize(t).input_ids[0][:seq_len].tolist() for t in texts]
    mask_id = None if lm.is_causal else lm.tokenizer.mask_token_id

    torch.manual_seed(seed)
    model = _build(config).to(lm.device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)

    def rate(s: int) -> float:  # warm-up then cosine decay; a function of the step, so resuming needs no state
        return lr * min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))
    folder = Path(path) if path else None
    ckpt = folder / "checkpoint" if folder else None
    start, losses, logged = 0, [], []
    spec = {"config": config.to_dict(), "seed": seed, "steps": steps, "lr": lr, "batch_size": batch_size,
            "temperature": temperature, "alpha": alpha, "seq_len": seq_len, "n_texts": len(texts)}
    if ckpt is not None and (ckpt / "state.json").is_file():
        saved = json.loads((ckpt / "state.json").read_text())
        if json.dumps(saved.get("spec"), sort_keys=True, default=str) == json.dumps(spec, sort_keys=True, default=str):
            state = _load_checkpoint(ckpt, model, opt)
            start, losses, logged = state["step"], state["losses"], state["logged"]
        else:
            raise DistillationError(f"{ckpt} holds a checkpoint of another run (other texts, size or budget); "
                                    "give another path or delete it.")
    log_every = max(1, steps // 50)
    t0 = time.perf_counter()
    for step in track(range(start, steps), "distilling the student", total=steps - start):
        rng = torch.Generator().manual_seed(seed * 1_000_003 + step)
        pick = torch.randint(len(train_ids), (batch_size,), generator=rng).tolist()
        b, real, ids = _batch(lm, [rows[train_ids[i]] for i in pick], mask_id, rng, mask_p)
        with torch.no_grad():
            t_logits = lm.forward(b, grad=False).logits
        s_logits = model(input_ids=b.input_ids.to(lm.device), attention_mask=b.attention_mask.to(lm.device)).logits
        keep = real.to(lm.device)
        loss = (1 - alpha) * _soft_loss(t_logits, s_logits, keep, temperature) if alpha < 1 else 0.0
        if alpha > 0:
            if lm.is_causal:  # the next token of the text, where there is one
                nxt = keep[:, 1:] & keep[:, :-1]
                loss = loss + alpha * torch.nn.functional.cross_entropy(s_logits[:, :-1][nxt], ids[:, 1:].to(lm.device)[nxt])
            else:
                loss = loss + alpha * torch.nn.functional.cross_entropy(s_logits[keep], ids.to(lm.device)[keep])
        for group in opt.param_groups:
            group["lr"] = rate(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            losses.append(float(loss.detach()))
            logged.append(step)
        if ckpt is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            _save_checkpoint(ckpt, model, opt, {"step": step + 1, "losses": losses, "logged": logged, "spec": spec})
    train_seconds = time.perf_counter() - t0
    model.eval()
    model.requires_grad_(False)

    # ---------------------------------------------------------------- held-out agreement and KL
    agree = total = 0
    kl_sum = 0.0
    eval_rng = torch.Generator().manual_seed(seed + 7)
    for s in range(0, len(test_ids), batch_size):
        b, real, _ = _batch(lm, [rows[i] for i in test_ids[s:s + batch_size]], mask_id, eval_rng, mask_p)
        with torch.no_grad():
            t = lm.forward(b, grad=False).logits.float()
            st = model(input_ids=b.input_ids.to(lm.device), attention_mask=b.attention_mask.to(lm.device)).logits.float()
        keep = real.to(lm.device)
        tl, sl = torch.log_softmax(t[keep], -1), torch.log_softmax(st[keep], -1)
        agree += int((tl.argmax(-1) == sl.argmax(-1)).sum())
        kl_sum += float((tl.exp() * (tl - sl)).sum(-1).sum())
        total += int(keep.sum())

    n_student = sum(p.numel() for p in model.parameters())
    n_teacher = sum(p.numel() for p in lm.model.parameters())
    saved = ""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(folder), safe_serialization=True)
        lm.tokenizer.save_pretrained(str(folder))
        saved = str(folder)
    r = Student(model=lm.name, config={"model_type": config.model_type, "layers": layers, "d_model": d_model,
                                       "heads": heads, "d_mlp": config.intermediate_size, "vocab_size": lm.vocab_size,
                                       "n_ctx": n_ctx},
                path=saved, losses=losses, steps=logged, n_params={"student": n_student, "teacher": n_teacher},
                diagnostics={"agreement": agree / max(total, 1), "kl": kl_sum / max(total, 1), "heldout_tokens": total,
                             "heldout_texts": len(test_ids), "n_train": len(train_ids), "steps_done": steps,
                             "resumed_from": start, "seconds": {"train": train_seconds}})
    r.lm = LM(model, lm.tokenizer, name=f"student of {lm.name}", source=saved)
    return r
