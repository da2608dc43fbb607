"""Training TopK dictionaries (SAEs and transcoders) on a model's activations, streamed and resumable.

The recipe is the TopK SAE of Gao et al. (2024), as EleutherAI sparsify trains it:

* ``f = TopK(relu(W_enc^T (x - b_dec) + b_enc))``, ``x̂ = f W_dec + b_dec``; the loss is the fraction
  of variance unexplained (``|x - x̂|² / |x - mean(x)|²`` over the batch), so it does not depend on
  the activations' scale;
* decoder rows kept at unit norm (the gradient's component along each row is removed before the
  step, the rows renormalised after it); encoder initialised to the decoder's transpose (SAE) or
  the decoder to zero (transcoder, whose target is another component); ``b_dec`` starts at the
  first batch's mean;
* **dead features** (no activation for ``dead_after`` tokens) are revived by the AuxK loss: the
  ``d_in / 2`` largest pre-activations among dead features reconstruct the live features' residual,
  weighted ``aux_alpha`` (1/32);
* Adam, learning rate ``2e-4 / sqrt(n_features / 2^14)`` unless given.

:func:`train` streams the corpus (:func:`il.corpus <interpretlm.maximization.corpus>`) through the
model in windows, reads the component in a hook (the blocks above it are not run), drops each
window's first token (attention-sink positions whose norm dwarfs the rest), shuffles each batch
of windows with a generator seeded by its index and takes optimizer steps of ``batch_tokens``. With
``path=`` the trainer's state (weights, Adam moments, dead counters, counts) is checkpointed
atomically (safetensors + manifest) every ``checkpoint_every`` windows, and the same call resumes
an interrupted run to the numbers an uninterrupted one ends with; the finished dictionary is saved
there in SAELens format with its metrics. :func:`fit` trains on activations already in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..progress import bar as progress_bar
from ..results import atomic_write
from .dictionary import Dictionary, component_width, read_mlp_input
from .errors import FeatureError

STATE_FORMAT = 1
KINDS = ("topk", "transcoder")


class Trainer:
    """The state of a TopK dictionary being trained: parameters, Adam, dead-feature counters.

    Args:
        d_in, n_features, k: sizes; d_out: the target's width (a transcoder's output; default ``d_in``).
        transcoder: the target is another component (decoder starts at zero, no ``b_dec`` subtraction).
        lr: Adam's learning rate (default ``2e-4 / sqrt(n_features / 2^14)``).
        dead_after: tokens without activation after which a feature counts as dead.
        aux_alpha: weight of the AuxK loss.
    """

    def __init__(self, d_in: int, n_features: int, k: int, *, d_out: int | None = None, transcoder: bool = False,
                 lr: float | None = None, dead_after: int = 100_000, aux_alpha: float = 1 / 32, seed: int = 0) -> None:
        if not 0 < k <= n_features:
            raise FeatureError(f"k must be in 1..n_features={n_features}; got {k}.")
        g = torch.Generator().manual_seed(seed)
        d_out = d_out or d_in
        self.k, self.transcoder, self.dead_after, self.aux_alpha = k, transcoder, dead_after, aux_alpha
        W_dec = torch.randn(n_features, d_out, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        if transcoder:
            W_enc = torch.randn(d_in, n_features, generator=g) / math.sqrt(d_in)
            W_dec.zero_()
        else:
            W_enc = W_dec.T.clone()
        self.p = {"W_enc": W_enc.requires_grad_(), "b_enc": torch.zeros(n_features, requires_grad=True),
                  "W_dec": W_dec.requires_grad_(), "b_dec": torch.zeros(d_out, requires_grad=True)}
        self.lr = lr if lr is not None else 2e-4 / math.sqrt(n_features / 2 ** 14)
        self.opt = torch.optim.Adam(list(self.p.values()), lr=self.lr, eps=6.25e-10)
        self.since_fired = torch.zeros(n_features, dtype=torch.long)
        self.counters = torch.zeros(3, dtype=torch.long)        # steps, tokens, windows
        self.initialised = torch.zeros(1, dtype=torch.long)
        self.scale = torch.ones(2)            # input, target scales (set by the first batch)

    @property
    def steps(self) -> int:
        return int(self.counters[0])

    def step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, float]:
        """One optimizer step on ``x [n, d_in]`` (target ``y [n, d_out]``, default ``x``); returns the losses."""
        p = self.p
        if not int(self.initialised):
            # inputs and targets scaled to a mean norm of sqrt(d) (from the first batch), so Adam's step
            # size means the same at any activation scale; the scales are folded into the weights at the end
            self.scale[0] = x.shape[-1] ** 0.5 / x.norm(dim=-1).mean().clamp_min(1e-12)
            yy = x if y is None else y
            self.scale[1] = yy.shape[-1] ** 0.5 / yy.norm(dim=-1).mean().clamp_min(1e-12)
            with torch.no_grad():
                p["b_dec"].copy_((yy * self.scale[1]).mean(0))
            self.initialised.fill_(1)
        x = x * self.scale[0]
        y = x if y is None else y * self.scale[1]
        sub = x - p["b_dec"] if not self.transcoder else x
        pre = sub @ p["W_enc"] + p["b_enc"]
        top = pre.topk(self.k, dim=-1)
        acts = top.values.relu()
        # dense codes through a scatter (its backward is a gather); gathering decoder rows instead makes the
        # backward an index_put with accumulation, far slower on CPU
        codes = torch.zeros_like(pre).scatter(-1, top.indices, acts)
        out = codes @ p["W_dec"] + p["b_dec"]                                   # [n, d_out]
        err = y - out
        total = (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)
        fvu = err.pow(2).sum() / total
        dead = self.since_fired >= self.dead_after
        aux = torch.zeros(())
        n_dead = int(dead.sum())
        if n_dead:
            k_aux = min(y.shape[-1] // 2, n_dead)
            scale = min(n_dead / (y.shape[-1] // 2), 1.0)
            masked = torch.where(dead, pre, float("-inf"))
            at = masked.topk(k_aux, dim=-1)
            e_hat = torch.zeros_like(pre).scatter(-1, at.indices, at.values.relu()) @ p["W_dec"]
            aux = scale * (e_hat - err.detach()).pow(2).sum() / total
        loss = fvu + self.aux_alpha * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            W, G = p["W_dec"], p["W_dec"].grad
            if not self.transcoder:   # unit-norm rows: only the gradient across each row moves it
                G -= (G * W).sum(1, keepdim=True) * W / W.pow(2).sum(1, keepdim=True).clamp_min(1e-12)
        self.opt.step()
        with torch.no_grad():
            norms = p["W_dec"].norm(dim=1, keepdim=True)
            if not self.transcoder:
                p["W_dec"] /= norms.clamp_min(1e-12)
            fired = (codes > 0).any(0)
            self.since_fired += x.shape[0]
            self.since_fired.masked_fill_(fired, 0)
        self.counters[0] += 1
        self.counters[1] += x.shape[0]
        return {"fvu": float(fvu.detach()), "aux": float(aux.detach()), "dead": n_dead}

    def dictionary(self, **kw: Any) -> Dictionary:
        """The current weights as a :class:`Dictionary` (copies)."""
        p = {k: v.detach().clone() for k, v in self.p.items()}
        sx, sy = float(self.scale[0]), float(self.scale[1])
        # fold the scales in: activations f / sx on raw inputs, decoder rows kept (an SAE's stay unit norm)
        p["b_enc"] /= sx
        p["W_dec"] *= sx / sy
        p["b_dec"] /= sy
        return Dictionary(p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"], activation="topk", k=self.k,
                          subtract_b_dec=not self.transcoder, **kw)

    def dead_fraction(self) -> float:
        return float((self.since_fired >= self.dead_after).float().mean())

    # ------------------------------------------------------------------ disk
    def state(self) -> dict[str, torch.Tensor]:
        out = {f"p.{k}": v.detach().contiguous() for k, v in self.p.items()}
        for i, (name, v) in enumerate(self.p.items()):
            st = self.opt.state.get(v, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    out[f"adam.{name}.{key}"] = st[key].contiguous()
            if "step" in st:
                out[f"adam.{name}.step"] = torch.as_tensor(st["step"]).reshape(1).float()
        out.update(since_fired=self.since_fired, counters=self.counters, initialised=self.initialised,
                   scale=self.scale)
        return out

    def load_state(self, t: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in self.p.items():
                if t[f"p.{k}"].shape != v.shape:
                    raise FeatureError("The checkpoint does not fit this request; delete the folder to start over.")
                v.copy_(t[f"p.{k}"])
        for name, v in self.p.items():
            if f"adam.{name}.exp_avg" in t:
                self.opt.state[v] = {"step": t[f"adam.{name}.step"].reshape(()).clone(),
                                     "exp_avg": t[f"adam.{name}.exp_avg"].clone(),
                                     "exp_avg_sq": t[f"adam.{name}.exp_avg_sq"].clone()}
        self.since_fired, self.counters = t["since_fired"].clone(), t["counters"].clone()
        self.initialised, self.scale = t["initialised"].clone(), t["scale"].clone()


def fit(x: torch.Tensor, *, n_features: int, k: int, component: str = "activations", y: torch.Tensor | None = None,
        output: str | None = None, steps: int = 2000, batch_tokens: int = 1024, lr: float | None = None,
        dead_after: int = 50_000, seed: int = 0) -> Dictionary:
    """Train a TopK dictionary on activations in memory (``x [n, d_in]``; a transcoder's target ``y [n, d_out]``).

    Batches are drawn with replacement-free shuffles of the rows, one epoch after another. The
    dictionary's metrics (``fvu``, ``l0``, ``dead_fraction``) are measured on the last 10% of the
    rows, held out of training.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> d = torch.randn(8, 16, generator=g); d /= d.norm(dim=1, keepdim=True)
        >>> codes = torch.zeros(2000, 8).scatter_(1, torch.randint(0, 8, (2000, 1), generator=g), 1.0)
        >>> sae = fit(codes @ d, n_features=8, k=1, steps=300, batch_tokens=256, lr=1e-2)
        >>> sae.metrics["fvu"] < 0.05
        True
    """
    x = torch.as_tensor(x).float()
    if x.ndim != 2 or x.shape[0] < 20:
        raise FeatureError(f"fit takes activations [n_tokens, d] with at least 20 rows; got {tuple(x.shape)}.")
    y = None if y is None else torch.as_tensor(y).float()
    n_eval = max(x.shape[0] // 10, 1)
    tr_x, ev_x = x[:-n_eval], x[-n_eval:]
    tr_y, ev_y = (None, None) if y is None else (y[:-n_eval], y[-n_eval:])
    t = Trainer(x.shape[1], n_features, k, d_out=None if y is None else y.shape[1], transcoder=y is not None,
                lr=lr, dead_after=dead_after, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(tr_x.shape[0], generator=g)
    pos = 0
    bar = progress_bar(steps, "training dictionary")
    try:
        for _ in range(steps):
            if pos + batch_tokens > len(order):
                order, pos = torch.randperm(tr_x.shape[0], generator=g), 0
            idx = order[pos:pos + batch_tokens]
            pos += batch_tokens
            t.step(tr_x[idx], None if tr_y is None else tr_y[idx])
            bar.update(1)
    finally:
        bar.close()
    sae = t.dictionary(component=component, output=output)
    sae.metrics = dict(reconstruction_metrics(sae, ev_x, ev_y), dead_fraction=t.dead_fraction(),
                       tokens=int(t.counters[1]), steps=t.steps)
    return sae


def reconstruction_metrics(sae: Dictionary, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, float]:
    """``fvu`` (fraction of variance unexplained) and ``l0`` (mean active features per token) on ``x [n, d_in]``.

    Example:
        >>> sae = Dictionary.random(8, 16, component="c", k=3)
        >>> reconstruction_metrics(sae, torch.randn(50, 8))["l0"] <= 3
        True
    """
    y = x if y is None else y
    with torch.no_grad():
        f = sae.encode(x)
        err = (y - sae.decode(f)).pow(2).sum()
        total = (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)
        return {"fvu": float(err / total), "l0": float((f != 0).float().sum(-1).mean())}


# ---------------------------------------------------------------------- on a model
def read_activations(lm: Any, component: str, output: str | None,
                     windows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What a dictionary on ``component`` reads: ``x [n, d_in]``, and a transcoder's target ``y [n, d_out]``
    at ``output`` (e.g. ``blocks.{i}.mlp``; else ``None``), for token windows ``[b][pos]``, the first token of each dropped
    (``n = b * (pos - 1)``), as float32 on the CPU.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm()
        >>> x, y = read_activations(lm, "blocks.0.mlp.input", "blocks.0.mlp", [[1, 2, 3, 4], [5, 6, 7, 8]])
        >>> tuple(x.shape) == (6, lm.d_model), tuple(y.shape) == (6, lm.d_model)
        (True, True)
    """
    from contextlib import ExitStack

    got: dict[str, torch.Tensor] = {}
    layer = int(component.split(".")[1])
    with ExitStack() as stack, torch.inference_mode():
        if component.endswith("mlp.input"):
            stack.enter_context(read_mlp_input(lm, layer, lambda v: got.__setitem__("x", v.detach())))
        else:
            cache = stack.enter_context(lm.capture([component]))
        if output is not None:
            ycache = stack.enter_context(lm.capture([output]))
        last = max(layer, int(output.split(".")[1]) if output else layer)
        lm.run(windows, until=last, head=False)
    x = got["x"] if "x" in got else cache[component]
    x = x.reshape(x.shape[0], x.shape[1], -1)               # attn.heads: [b, pos, head * d_head]
    x = x[:, 1:].reshape(-1, x.shape[-1])
    y = None
    if output is not None:
        yy = ycache[output]
        y = yy[:, 1:].reshape(-1, yy.shape[-1])
    return x.float().cpu(), None if y is None else y.float().cpu()


def _windows(corpus: Any, tokenizer: Any, window: int, start: int, stop: int) -> Iterator[tuple[int, list[int]]]:
    for i, ids in enumerate(corpus.windows(tokenizer, window)):
        if i >= stop:
            return
        if i >= start:
            yield i, ids


def train(lm: Any, component: str, *, corpus: Any = "builtin", kind: str = "topk", n_features: int | None = None,
          k: int = 32, path: str | None = None, tokens: int = 200_000, window: int = 64, batch_size: int = 8,
          batch_tokens: int = 1024, lr: float | None = None, dead_after: int | None = None,
          eval_windows: int = 32, checkpoint_every: int = 256, seed: int = 0,
          progress: Any = None) -> Dictionary:
    """Train a TopK SAE (or transcoder) on ``lm``'s activations at ``component`` over a corpus.

    Args:
        lm: the model handle.
        component: the canonical component to read (``"blocks.15.resid_post"``); for
            ``kind="transcoder"`` a block's MLP (``"blocks.3.mlp"``): the MLP's input is read and
            its output reconstructed.
        corpus: ``"builtin"`` (the KJV), a file, a list of texts or an ``il.corpus``.
        kind: ``"topk"`` (an SAE) or ``"transcoder"``.
        n_features: dictionary size (default ``8 * d_in``); k: active features per token.
        path: a folder for checkpoints and the finished dictionary (SAELens format); the same call
            resumes an interrupted run.
        tokens: training tokens (after the held-out windows), read in windows of ``window`` tokens,
            ``batch_size`` windows per forward pass, ``batch_tokens`` per optimizer step.
        lr: Adam's learning rate; dead_after: tokens without activation before a feature is dead
            (default ``tokens / 4``).
        eval_windows: the first windows of the corpus, held out for the metrics.
        checkpoint_every: windows between checkpoints.
        seed: initialisation and shuffles.

    Returns:
        the :class:`Dictionary`; ``sae.metrics`` holds ``fvu``, ``l0``, ``dead_fraction``,
        ``ce_loss_recovered`` (with ``ce_clean``, ``ce_spliced``, ``ce_zero_ablated``) measured on the
        held-out windows, and ``sae.check`` judges the fraction of variance unexplained.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> texts = ["the cat sat on the mat and the dog ran off to the park"] * 40
        >>> sae = train(lm, "blocks.1.resid_post", corpus=texts, n_features=64, k=4, tokens=2000, window=16,
        ...             eval_windows=4, progress=False)
        >>> sorted(sae.metrics)[:4], sae.metrics["l0"] <= 4
        (['ce_clean', 'ce_loss_recovered', 'ce_spliced', 'ce_zero_ablated'], True)
    """
    from ..maximization.corpus import corpus as as_corpus
    from ..progress import policy

    if kind not in KINDS:
        raise FeatureError(f"kind is one of {KINDS}; got {kind!r}.")
    for name, v in dict(k=k, tokens=tokens, window=window, batch_size=batch_size, batch_tokens=batch_tokens,
                        eval_windows=eval_windows, checkpoint_every=checkpoint_every).items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise FeatureError(f"{name} must be a positive int; got {v!r}.")
    if window < 2:
        raise FeatureError("window must be at least 2 tokens (each window's first token is left out).")
    output = None
    if kind == "transcoder":
        parts = component.split(".")
        if len(parts) != 3 or parts[0] != "blocks" or parts[2] != "mlp":
            raise FeatureError(f"A transcoder maps a block's MLP input to its output: give 'blocks.N.mlp'; got "
                               f"{component!r}.")
        output, component = component, f"blocks.{parts[1]}.mlp.input"
    d_in = component_width(lm, component)
    d_out = component_width(lm, output) if output else d_in
    if component in ("embed", "final_norm"):
        raise FeatureError(f"Train a dictionary on a block's component (blocks.N.resid_post...); got {component!r}.")
    n_features = n_features or 8 * d_in
    c = as_corpus(corpus)
    per_window = window - 1
    train_windows = math.ceil(tokens / per_window)
    dead_after = dead_after or max(tokens // 4, batch_tokens)
    config = {"format": STATE_FORMAT, "component": component, "output": output, "n_features": n_features, "k": k,
              "tokens": tokens, "window": window, "batch_size": batch_size, "batch_tokens": batch_tokens, "lr": lr,
              "dead_after": dead_after, "eval_windows": eval_windows, "seed": seed}
    fingerprint = hashlib.sha256(json.dumps({"config": config, "corpus": c.identity(), "model": lm.fingerprint},
                                            sort_keys=True, default=str).encode()).hexdigest()
    t = Trainer(d_in, n_features, k, d_out=d_out, transcoder=output is not None, lr=lr, dead_after=dead_after,
                seed=seed)
    folder = Path(path) if path is not None else None
    ckpt = folder / "checkpoint" if folder is not None else None
    if ckpt is not None:
        mf = ckpt / "manifest.json"
        if mf.exists():
            if json.loads(mf.read_text()).get("fingerprint") != fingerprint:
                raise FeatureError(f"{folder} holds a training run of another request (component, sizes, corpus or "
                                   "model); use another path or delete it.")
            from safetensors.torch import load_file
            t.load_state(load_file(str(ckpt / "state.safetensors")))
        elif folder.exists() and any(p.name != "checkpoint" for p in folder.iterdir()):
            raise FeatureError(f"{folder} exists and holds other files; give an empty or new folder.")

    def save_checkpoint() -> None:
        from safetensors.torch import save_file
        atomic_write(ckpt / "state.safetensors", lambda tmp: save_file(t.state(), tmp))
        atomic_write(ckpt / "manifest.json", lambda tmp: Path(tmp).write_text(json.dumps(
            dict(config, fingerprint=fingerprint, model=lm.name, windows_done=int(t.counters[2])), indent=1)))

    start, cpu = time.perf_counter(), time.process_time()
    done = int(t.counters[2])
    with policy(progress):
        bar = progress_bar(train_windows, f"training {kind} dictionary", initial=done)
        try:
            batch: list[list[int]] = []
            last_ckpt = done
            for i, ids in _windows(c, lm.tokenizer, window, eval_windows + done, eval_windows + train_windows):
                batch.append(ids)
                if len(batch) < batch_size and i + 1 < eval_windows + train_windows:
                    continue
                window0 = i + 1 - len(batch) - eval_windows
                x, y = read_activations(lm, component, output, batch)
                g = torch.Generator().manual_seed(seed * 1_000_003 + window0)
                order = torch.randperm(x.shape[0], generator=g)
                for s in range(0, len(order), batch_tokens):
                    idx = order[s:s + batch_tokens]
                    if len(idx) >= 2:
                        t.step(x[idx], None if y is None else y[idx])
                t.counters[2] += len(batch)
                bar.update(len(batch))
                batch = []
                if ckpt is not None and int(t.counters[2]) - last_ckpt >= checkpoint_every:
                    save_checkpoint()
                    last_ckpt = int(t.counters[2])
        finally:
            bar.close()
    if int(t.counters[2]) == 0:
        raise FeatureError(f"The corpus has no windows of {window} tokens after the {eval_windows} held out; give "
                           "more text, fewer eval_windows or a smaller window.")
    if ckpt is not None:
        save_checkpoint()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    sae = t.dictionary(component=component, output=output)
    eval_ids = [ids for _, ids in _windows(c, lm.tokenizer, window, 0, eval_windows)]
    from .metrics import evaluate
    sae.metrics = dict(evaluate(lm, sae, eval_ids, batch_size=batch_size), dead_fraction=t.dead_fraction(),
                       tokens=int(t.counters[1]), steps=t.steps, seconds=seconds, cpu_seconds=cpu_seconds, eval_windows=len(eval_ids),
                       window=window)
    if folder is not None:
        sae.save(folder)
    if not (sae.check.passed is not False):
        import warnings
        from ..errors import CheckWarning
        warnings.warn(f"il.features.train: {sae.check}: train on more tokens, with more features or a larger k.",
                      CheckWarning, stacklevel=2)
    return sae


__all__ = ["KINDS", "Trainer", "fit", "read_activations", "reconstruction_metrics", "train"]
