"""The explained input: prepared batch, target rows, features, masking and pass counting.

Every method builds one :class:`Explained` and asks it for values of perturbed inputs
(:meth:`Explained.values`, batched, no gradient) or for gradients along embeddings
(:meth:`Explained.gradients`, one backward over independent batch rows). Targets with one
value per generated token (``Continuation``) give ``R`` *rows*; single targets give one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InterpretLMError
from ..model import LM, Output
from ..progress import Bar, ProgressLike, bar
from ..targets import Continuation, Target, TargetLike, as_target
from ..tokens import Batch
from .features import Features, build_features
from .result import Attribution

MASKINGS = ("token", "attention")


class MaskingError(InterpretLMError, ValueError):
    """A masking mode or baseline token that cannot be used."""


@dataclass
class Passes:
    """Cost counters recorded in every result.

    ``forward_passes`` / ``backward_passes`` count batched calls of the model (what a
    batched method pays in latency); ``model_evaluations`` / ``gradient_evaluations``
    count the sequences those calls ran (what a one-at-a-time method would pay).
    """

    forward_passes: int = 0
    backward_passes: int = 0
    model_evaluations: int = 0
    gradient_evaluations: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def baseline_token_id(lm: LM, baseline_token: str | int | None) -> int:
    """The id used to mask a feature: ``"unk"``, ``"pad"``, ``"eos"``, ``"bos"``, ``"mask"``,
    a single-token string or an id; ``None`` picks unk, else pad, else eos."""
    tok = lm.tokenizer
    named = {"unk": tok.unk_token_id, "pad": tok.pad_token_id, "eos": tok.eos_token_id,
             "bos": tok.bos_token_id, "mask": getattr(tok, "mask_token_id", None)}
    if baseline_token is None:
        for key in ("unk", "pad", "eos"):
            if named[key] is not None:
                return int(named[key])
        raise MaskingError("The tokenizer has no unk, pad or eos token: pass baseline_token='some token'.")
    if isinstance(baseline_token, int):
        if not 0 <= baseline_token < lm.vocab_size:
            raise MaskingError(f"baseline_token id {baseline_token} is outside the vocabulary (0..{lm.vocab_size - 1}).")
        return baseline_token
    if baseline_token in named:
        if named[baseline_token] is None:
            raise MaskingError(f"This tokenizer has no {baseline_token} token; pick one of "
                               f"{[k for k, v in named.items() if v is not None]} or give a token string.")
        return int(named[baseline_token])
    ids = lm.tokenizer(baseline_token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise MaskingError(f"baseline_token {baseline_token!r} is {len(ids)} tokens; give a single token "
                           "(or 'unk', 'pad', 'eos').")
    return int(ids[0])


def progress(total: int, desc: str, show: ProgressLike = None) -> Bar:
    """A progress bar following the library's one policy (:mod:`interpretlm.progress`)."""
    return bar(total, desc, show)


@dataclass
class Explained:
    """One prompt prepared for attribution.

    Attributes:
        lm: the model.
        target: the prepared target.
        batch: the prepared one-row batch (continuation appended for ``Continuation``).
        n_prompt: number of prompt tokens.
        features: the features explained.
        row_labels: one label per target row (generated tokens); ``[]`` for a single target.
        row_positions: for continuation rows, the position of each generated token.
        masking: ``"token"`` or ``"attention"``.
        mask_id: the baseline token id used by ``"token"`` masking (and by token baselines).
    """

    lm: LM
    target: Target
    batch: Batch
    n_prompt: int
    features: Features
    row_labels: list[str]
    row_positions: list[int]
    masking: str
    mask_id: int
    batch_size: int = 16
    passes: Passes = field(default_factory=Passes)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, lm: LM, inputs: Any, target: TargetLike, *, granularity: str = "token",
              spans: Sequence[tuple[int, int] | str] | None = None, masking: str = "token",
              baseline_token: str | int | None = None, batch_size: int = 16, chat: bool = False) -> "Explained":
        if masking not in MASKINGS:
            raise MaskingError(f"masking must be one of {MASKINGS}; got {masking!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise MaskingError(f"batch_size must be a positive integer; got {batch_size!r}.")
        tgt = as_target(target, lm)
        raw = lm.tokenize(inputs, chat=chat)
        if raw.size != 1:
            raise MaskingError(f"Attribution explains one prompt at a time; got {raw.size}. "
                               "Call il.attribute once per prompt.")
        n_prompt = int(raw.lengths[0])
        batch = tgt.prepare(lm, raw).row(0)
        feats = build_features(batch, n_prompt, granularity, spans)
        labels, positions = [], []
        if isinstance(tgt, Continuation):
            positions = batch.extra["continuation_positions"][0].tolist()
            labels = [batch.tokens[0][p] for p in positions]
        return cls(lm, tgt, batch, n_prompt, feats, labels, positions, masking,
                   baseline_token_id(lm, baseline_token), batch_size)

    @property
    def n_rows(self) -> int:
        return max(1, len(self.row_labels))

    @property
    def masking_label(self) -> str:
        if self.masking == "attention":
            return "attention"
        return f"token:{self.lm.tokenizer.convert_ids_to_tokens(self.mask_id)}"

    def row_values(self, out) -> torch.Tensor:
        """``[n, R]`` target values of a forward pass (one column per generated token)."""
        if self.row_labels:
            return self.target.per_token(out)  # type: ignore[attr-defined]
        return self.target(out).unsqueeze(1)

    def visible(self) -> np.ndarray:
        """``[R, F]`` whether feature f can influence row r (it comes before the row's token)."""
        first = np.array(self.features.first_position)
        if not self.row_labels:
            return np.ones((1, len(first)), dtype=bool)
        return first[None, :] < np.array(self.row_positions)[:, None]

    # ------------------------------------------------------------------ perturbations
    def masked_batch(self, keep: torch.Tensor) -> Batch:
        """``keep [n, F]`` (1 = feature present) -> a batch of ``n`` perturbed rows."""
        n = keep.shape[0]
        ids = self.batch.input_ids.repeat(n, 1)
        mask = self.batch.attention_mask.repeat(n, 1)
        for f, pos in enumerate(self.features.positions):
            drop = ~keep[:, f].bool()
            if not bool(drop.any()):
                continue
            for p in pos:
                if self.masking == "token":
                    ids[drop, p] = self.mask_id
                else:
                    mask[drop, p] = 0
        b = self.batch
        return Batch(ids, mask, b.special.repeat(n, 1), b.in_prompt.repeat(n, 1), b.texts * n, b.prompts * n,
                     b.offsets * n, b.tokens * n, dict(b.policy),
                     {k: (v.repeat(n, *([1] * (v.dim() - 1))) if isinstance(v, torch.Tensor) else v)
                      for k, v in b.extra.items()})

    @torch.no_grad()
    def values(self, keep: torch.Tensor | np.ndarray, desc: str = "scoring") -> np.ndarray:
        """Target values of perturbed inputs: ``keep [n, F]`` -> ``[n, R]`` (float64), scored
        in batches of ``batch_size``."""
        keep = torch.as_tensor(np.asarray(keep), dtype=torch.bool)
        out = []
        with progress(len(keep), desc) as bar:
            for s in range(0, len(keep), self.batch_size):
                chunk = keep[s:s + self.batch_size]
                res = self.lm.forward(self.masked_batch(chunk), grad=False)
                out.append(self.row_values(res).double().cpu().numpy())
                self.passes.forward_passes += 1
                self.passes.model_evaluations += len(chunk)
                bar.update(len(chunk))
        return np.concatenate(out, 0) if out else np.zeros((0, self.n_rows))

    # ------------------------------------------------------------------ gradients
    def embeddings(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """``[pos, d_model]`` input embeddings of the row (or of ``ids``)."""
        emb = self.lm.model.get_input_embeddings()
        with torch.no_grad():
            return emb((self.batch.input_ids if ids is None else ids).to(self.lm.device))[0].detach()

    def gradients(self, embeds: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """Values and gradients at embedded inputs.

        Args:
            embeds: ``[n, pos, d_model]`` input embeddings.

        Returns:
            ``values [n, R]`` and ``grads [n, R, pos, d_model]``. Every row reads the same
            forward pass of the ``n`` inputs: one forward per chunk of ``batch_size`` inputs,
            then one vector-Jacobian product per row through the retained graph (a single
            target needs just one).

        Example:
            >>> import interpretlm as il
            >>> from interpretlm.testing import tiny_lm
            >>> ex = Explained.build(tiny_lm("llama"), "a b c", il.Continuation(" d e"))
            >>> vals, grads = ex.gradients(ex.embeddings().unsqueeze(0))
            >>> vals.shape == (1, ex.n_rows), tuple(grads.shape) == (1, ex.n_rows, *ex.embeddings().shape)
            (True, True)
        """
        n, R = embeds.shape[0], self.n_rows
        vals, grads = [], []
        for s in range(0, n, self.batch_size):
            x = embeds[s:s + self.batch_size].detach().requires_grad_(True)  # [m, pos, d]
            m = x.shape[0]
            b = self.masked_batch(torch.ones(m, len(self.features), dtype=torch.bool))
            out = self.lm.forward(b, inputs_embeds=x.to(self.lm.dtype), grad=True)
            per_row = self._row_graphs(out)
            g = torch.stack([self._grad_of(v, x, retain=r < R - 1) for r, v in enumerate(per_row)], 1)  # [m, R, pos, d]
            vals.append(torch.stack([v.detach() for v in per_row], 1).double().cpu().numpy())
            grads.append(g.detach())
            self.passes.forward_passes += 1
            # one backward call per row: a batched method still pays it once per row
            self.passes.backward_passes += R
            self.passes.gradient_evaluations += m * R
            self.passes.model_evaluations += m
        return np.concatenate(vals, 0), torch.cat(grads, 0)

    @staticmethod
    def _grad_of(value: torch.Tensor, x: torch.Tensor, retain: bool) -> torch.Tensor:
        """``d value.sum() / d x``; zeros where an intervention cut the value off the input."""
        if not value.requires_grad:
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(value.sum(), x, retain_graph=retain, allow_unused=True)
        return torch.zeros_like(x) if g is None else g

    def _row_graphs(self, out: Output) -> list[torch.Tensor]:
        """``R`` tensors ``[m]``: each row's values, attached to the graph of ``out``.

        Continuation row r reads the logits at the position before its token only. Its
        backward then needs the LM head at that one position, so each row's logits are
        rebuilt from the final hidden state there (the head is ~20 % of a backward pass
        over all positions of this model); everything else is the detached forward. Where
        the head does not reproduce the model's logits (a soft-capping family), or the
        target reads other positions, every row reads the full logits.
        """
        if not self.row_labels:
            return [self.row_values(out)[:, 0]]
        at = (torch.as_tensor(self.row_positions) - 1).to(out.hidden.device)
        head = self.lm.model.get_output_embeddings()
        if type(self.target).per_token is Continuation.per_token and head is not None:
            rebuilt = head(out.hidden[:, at])  # [m, R, vocab]
            ref = out.logits[:, at].detach()
            if torch.allclose(rebuilt.detach(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max())):
                fixed = out.logits.detach()
                rows = []
                for r in range(len(at)):
                    logits = fixed.clone()
                    logits[:, at[r]] = rebuilt[:, r]
                    rows.append(self.row_values(Output(logits, out.hidden, out.batch))[:, r])
                return rows
        v = self.row_values(out)
        return [v[:, r] for r in range(v.shape[1])]

    def feature_sums(self, per_pos: torch.Tensor) -> np.ndarray:
        """``[..., pos]`` -> ``[..., F]`` summed over each feature's positions."""
        cols = [per_pos[..., pos].sum(-1) for pos in self.features.positions]
        return torch.stack(cols, -1).double().cpu().numpy()

    # ------------------------------------------------------------------ result
    def result(self, method: str, scores: np.ndarray, *, target_value: np.ndarray,
               baseline_value: np.ndarray | None = None, diagnostics: dict[str, Any] | None = None,
               masking: str | None = None, options: dict[str, Any] | None = None) -> Attribution:
        """Wrap ``scores [R, F]`` as an :class:`Attribution` (NaN where a feature comes after the
        row's token; 1-d for single targets)."""
        scores = np.where(self.visible(), scores, np.nan)
        single = not self.row_labels
        diag = dict(diagnostics or {})
        diag.update(self.passes.as_dict())
        b = self.batch
        return Attribution(
            model=self.lm.name, method=method, target=self.target.to_dict(), policy=dict(b.policy),
            diagnostics=diag, prompt=b.prompts[0], tokens=list(b.tokens[0]), special=b.special[0].tolist(),
            features=list(self.features.labels), feature_tokens=[list(p) for p in self.features.positions],
            scores=scores[0] if single else scores, rows=list(self.row_labels),
            target_value=float(target_value[0]) if single else np.asarray(target_value, dtype=float),
            baseline_value=(None if baseline_value is None else
                            float(baseline_value[0]) if single else np.asarray(baseline_value, dtype=float)),
            granularity=self.features.granularity, masking=masking,
            input_ids=b.input_ids[0, :self.n_prompt].tolist(), options=dict(options or {}))
