"""What is being explained: one scalar per input row, the same for every method.

A :class:`Target` may first *prepare* the batch (a continuation is appended for teacher
forcing), then maps the model's output to ``[batch]`` scores. Every method of
interpretlm explains a target; any ``callable(logits, batch) -> Tensor[batch]`` works too.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> p = "When Mary and John went to the store, John gave a drink to"
    >>> lm.score(p, il.NextToken(" Mary"))            # log p(" Mary" | p)  # doctest: +SKIP
    >>> lm.score(p, il.Contrast(" Mary", " John"))    # logit(" Mary") - logit(" John")  # doctest: +SKIP
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import torch

from .errors import TargetError
from .tokens import Batch, append_tokens

if TYPE_CHECKING:
    from .model import LM, Output

_KINDS = ("logprob", "logit", "prob")


def _value(logits_row: torch.Tensor, ids: torch.Tensor, kind: str) -> torch.Tensor:
    """logits ``[batch, vocab]`` -> ``[batch, len(ids)]`` in the requested kind."""
    if kind == "logit":
        return logits_row[:, ids]
    logp = torch.log_softmax(logits_row.float(), dim=-1)[:, ids]
    return logp.exp() if kind == "prob" else logp


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise TargetError(f"kind must be one of {_KINDS}; got {kind!r}.")


def prediction_positions(lm: "LM", batch: Batch) -> torch.Tensor:
    """``[batch]`` position whose output predicts the target.

    The last real token for causal models; the first ``[MASK]`` for masked models.
    """
    if lm.is_causal:
        return batch.last_index
    mask_id = lm.tokenizer.mask_token_id
    hits = (batch.input_ids == mask_id) & batch.attention_mask.bool()
    if mask_id is None or not bool(hits.any(dim=1).all()):
        raise TargetError(
            f"This is a masked (encoder) model: every prompt needs a {lm.tokenizer.mask_token!r} "
            "token where the prediction is read, e.g. 'The capital of France is [MASK].'")
    return hits.int().argmax(dim=1)


def gather_at(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Each row's vector at its own position: ``logits [batch, pos, ...]``, ``pos [batch]`` -> ``[batch, ...]``.

    Example:
        >>> gather_at(torch.arange(12.).view(2, 3, 2), torch.tensor([2, 0])).tolist()
        [[4.0, 5.0], [6.0, 7.0]]
    """
    return logits[torch.arange(logits.shape[0], device=logits.device), pos.to(logits.device)]


_gather = gather_at  # the short name used inside this module


class Target(ABC):
    """Base class: ``prepare`` the batch, then ``__call__(out) -> [batch]``."""

    needs_logits: bool = True

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        """Check the target against the model and return the batch to run (default: unchanged)."""
        if self.needs_logits and not lm.has_head:
            raise TargetError(
                f"{type(self).__name__} needs a language-model head; this model has none. "
                "Use il.PooledEmbedding(...) for an encoder without a head, or load it with a head.")
        return batch

    @abstractmethod
    def __call__(self, out: "Output") -> torch.Tensor:
        """``[batch]`` values of the target on one forward pass."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, recorded in results."""
        return {"kind": type(self).__name__}


def one_token_id(lm: "LM", token: str | int, what: str = "Token", hint: str | None = None) -> int:
    """The id of ``token`` when it is exactly one token of ``lm``'s vocabulary (or a valid id).

    Args:
        lm: the model handle.
        token: a string (``" Mary"``, leading space included) or a token id.
        what: how the error message names the token (``"NextToken target"``).
        hint: what the error message suggests instead (default: ``il.Continuation``).

    Raises:
        TargetError: the text is several tokens (the message lists them), or the id is
            outside the vocabulary.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("gpt2")
        >>> one_token_id(lm, " Mary") == lm.tokenizer(" Mary")["input_ids"][0]
        True
    """
    if isinstance(token, int):
        if not 0 <= token < lm.vocab_size:
            raise TargetError(f"Token id {token} is outside the vocabulary (0..{lm.vocab_size - 1}).")
        return token
    ids = lm.tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = [lm.tokenizer.decode([i]) for i in ids]
        raise TargetError(
            f"{what} {token!r} is {len(ids)} tokens for this model ({pieces}), not one. "
            + (hint or f"Use il.Continuation({token!r}) to explain a multi-token text, or pick a single token."))
    return ids[0]


_single_token = one_token_id  # the short name used inside this module


@dataclass
class NextToken(Target):
    """The model's score for ``token`` as the next token (``[MASK]`` for encoders).

    Args:
        token: a string that is exactly one token (e.g. ``" Mary"`` with its leading
            space) or a token id.
        kind: ``"logprob"`` (default), ``"logit"`` or ``"prob"``.
    """

    token: str | int
    kind: str = "logprob"

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        super().prepare(lm, batch)
        _check_kind(self.kind)
        self.token_id = _single_token(lm, self.token, "NextToken target")
        self._lm = lm
        return batch

    def __call__(self, out: "Output") -> torch.Tensor:
        pos = prediction_positions(self._lm, out.batch)
        return _value(_gather(out.logits, pos), torch.tensor([self.token_id]), self.kind)[:, 0]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "NextToken", "token": self.token, "score": self.kind}


MaskedToken = NextToken
"""For encoders ``NextToken`` reads the prediction at the ``[MASK]`` token; this alias says so."""


@dataclass
class Contrast(Target):
    """``logit(a) - logit(b)`` at the prediction position (equals the log-prob difference)."""

    a: str | int
    b: str | int

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        super().prepare(lm, batch)
        self.ids = (_single_token(lm, self.a, "Contrast token"), _single_token(lm, self.b, "Contrast token"))
        self._lm = lm
        return batch

    def __call__(self, out: "Output") -> torch.Tensor:
        row = _gather(out.logits, prediction_positions(self._lm, out.batch))
        return row[:, self.ids[0]] - row[:, self.ids[1]]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "Contrast", "a": self.a, "b": self.b}


@dataclass
class Continuation(Target):
    """Log-probability of a whole continuation, teacher-forced after the prompt.

    The continuation is tokenized on its own (no special tokens) and appended to every
    row; ``per_token(out)`` gives ``[batch, n_tokens]`` log-probabilities.

    Args:
        text: the continuation (mind the leading space), or its token ids.
        reduce: ``"sum"`` (log-probability of the whole text) or ``"mean"``.
    """

    text: str | Sequence[int]
    reduce: str = "sum"

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        super().prepare(lm, batch)
        if not lm.is_causal:
            raise TargetError("Continuation needs a causal (decoder) model; for an encoder use "
                              "NextToken with a [MASK] token.")
        if self.reduce not in ("sum", "mean"):
            raise TargetError(f"reduce must be 'sum' or 'mean'; got {self.reduce!r}.")
        ids = (lm.tokenizer(self.text, add_special_tokens=False)["input_ids"]
               if isinstance(self.text, str) else [int(t) for t in self.text])
        if not ids:
            raise TargetError("The continuation is empty: give at least one token to explain.")
        self.token_ids = ids
        new, positions = append_tokens(batch, ids, lm.tokenizer, lm.n_ctx)
        new.extra["continuation_positions"] = positions
        return new

    def per_token(self, out: "Output") -> torch.Tensor:
        """``[batch, n_tokens]`` log p(token_k | prompt, tokens before k)."""
        pos = out.batch.extra["continuation_positions"].to(out.logits.device)  # [batch, k]
        pred = out.logits.gather(1, (pos - 1).unsqueeze(-1).expand(-1, -1, out.logits.shape[-1]))
        logp = torch.log_softmax(pred.float(), dim=-1)
        ids = torch.tensor(self.token_ids, device=logp.device)
        return logp.gather(2, ids.view(1, -1, 1).expand(logp.shape[0], -1, 1))[..., 0]

    def __call__(self, out: "Output") -> torch.Tensor:
        lp = self.per_token(out)
        return lp.sum(dim=1) if self.reduce == "sum" else lp.mean(dim=1)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "Continuation", "text": self.text if isinstance(self.text, str) else list(self.text),
                "reduce": self.reduce}


@dataclass
class Label(Target):
    """Log-probability of a label, read through verbalizer tokens and normalized over labels.

    ``p(label) = sum of its verbalizers' probabilities / sum over all labels``.

    Args:
        verbalizers: ``{label: token or [tokens]}``, each token a single token.
        label: the label explained (default: the first one).

    Example:
        >>> il.Label({"positive": [" good", " great"], "negative": [" bad"]}, label="positive")  # doctest: +SKIP
    """

    verbalizers: Mapping[str, str | int | Sequence[str | int]]
    label: str | None = None

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        super().prepare(lm, batch)
        if not self.verbalizers:
            raise TargetError("Label needs at least one label with its verbalizer tokens.")
        self.label_ids: dict[str, list[int]] = {}
        for name, toks in self.verbalizers.items():
            toks = [toks] if isinstance(toks, (str, int)) else list(toks)
            self.label_ids[name] = [_single_token(lm, t, f"Verbalizer of {name!r}",
                                                         "Verbalizers must be single tokens; pick another word.") for t in toks]
        if self.label is not None and self.label not in self.label_ids:
            raise TargetError(f"Label {self.label!r} is not one of {list(self.label_ids)}.")
        self._lm = lm
        return batch

    def __call__(self, out: "Output") -> torch.Tensor:
        row = torch.log_softmax(_gather(out.logits, prediction_positions(self._lm, out.batch)).float(), -1)
        per_label = torch.stack([torch.logsumexp(row[:, ids], dim=-1) for ids in self.label_ids.values()], -1)
        which = list(self.label_ids).index(self.label) if self.label is not None else 0
        return torch.log_softmax(per_label, dim=-1)[:, which]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "Label", "verbalizers": {k: v if isinstance(v, (str, int)) else list(v)
                                                 for k, v in self.verbalizers.items()},
                "label": self.label}


@dataclass
class PooledEmbedding(Target):
    """A scalar of the pooled last hidden state (sentence embedding) of an encoder or decoder.

    With ``reference`` (a text or a ``[d_model]`` vector) the score is the cosine
    similarity to the reference's embedding; with ``direction`` the dot product; with
    ``dim`` one coordinate; otherwise the L2 norm.

    Args:
        pooling: ``"mean"`` over real tokens (default, as sentence-transformers),
            ``"first"`` ([CLS]) or ``"last"``.
    """

    reference: str | torch.Tensor | None = None
    direction: torch.Tensor | None = None
    dim: int | None = None
    pooling: str = "mean"
    needs_logits = False

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        if self.pooling not in ("mean", "first", "last"):
            raise TargetError(f"pooling must be 'mean', 'first' or 'last'; got {self.pooling!r}.")
        if self.dim is not None and not 0 <= self.dim < lm.d_model:
            raise TargetError(f"dim {self.dim} is out of range for d_model={lm.d_model}.")
        self._ref = None
        if isinstance(self.reference, str):
            with torch.no_grad():
                ref_out = lm.forward(self.reference)
            self._ref = self.pool(ref_out.hidden, ref_out.batch)[0].detach()
        elif self.reference is not None:
            self._ref = torch.as_tensor(self.reference, dtype=torch.float32)
        return batch

    def pool(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``[batch, pos, d_model]`` -> ``[batch, d_model]``."""
        mask = batch.attention_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            return (hidden * mask).sum(1) / mask.sum(1)
        if self.pooling == "first":
            return hidden[:, 0]
        return _gather(hidden, batch.last_index)

    def __call__(self, out: "Output") -> torch.Tensor:
        pooled = self.pool(out.hidden, out.batch).float()
        if self._ref is not None:
            return torch.nn.functional.cosine_similarity(pooled, self._ref.to(pooled.device).float().unsqueeze(0), dim=-1)
        if self.direction is not None:
            return pooled @ torch.as_tensor(self.direction, dtype=pooled.dtype, device=pooled.device)
        if self.dim is not None:
            return pooled[:, self.dim]
        return pooled.norm(dim=-1)

    def to_dict(self) -> dict[str, Any]:
        ref = self.reference if isinstance(self.reference, str) or self.reference is None else "<vector>"
        return {"kind": "PooledEmbedding", "reference": ref, "dim": self.dim, "pooling": self.pooling,
                "direction": None if self.direction is None else "<vector>"}


@dataclass
class FunctionTarget(Target):
    """Any ``fn(logits [batch, pos, vocab], batch) -> Tensor[batch]``."""

    fn: Callable[[torch.Tensor, Batch], torch.Tensor]
    name: str = "custom"

    def __call__(self, out: "Output") -> torch.Tensor:
        value = self.fn(out.logits if out.logits is not None else out.hidden, out.batch)
        if not isinstance(value, torch.Tensor) or value.shape != (out.batch.size,):
            raise TargetError(f"The target function must return a tensor of shape [batch]=({out.batch.size},); "
                              f"got {getattr(value, 'shape', type(value).__name__)}.")
        return value

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        return batch

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "FunctionTarget", "name": getattr(self.fn, "__name__", self.name)}


TargetLike = Union[Target, str, int, Callable[[torch.Tensor, Batch], torch.Tensor]]


def as_target(target: TargetLike) -> Target:
    """A :class:`Target` from a target, a single-token string / id (``NextToken``) or a callable."""
    if isinstance(target, Target):
        return target
    if isinstance(target, (str, int)):
        return NextToken(target)
    if callable(target):
        return FunctionTarget(target)
    raise TargetError(f"Cannot explain {target!r}: pass il.NextToken(...), il.Contrast(...), "
                      "il.Continuation(...), il.Label(...), il.PooledEmbedding(...) or a callable.")
