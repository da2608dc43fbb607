"""What is being explained: one scalar per input row, the same for every method.

Targets are immutable plain data: ``t.to_dict()`` describes one and ``Target.from_dict``
rebuilds it, so a job can be saved, rerun or sent to another process. Binding a target to
a model (``t.bind(lm)``: token ids resolved and checked) returns a *new* object; the
user's own target is never changed, so one target serves several models. A bound target
may *prepare* the batch (a continuation is appended for teacher forcing), then maps the
model's output to ``[batch]`` scores. Any ``callable(logits, batch) -> Tensor[batch]``
works too.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> p = "When Mary and John went to the store, John gave a drink to"
    >>> lm.score(p, il.NextToken(" Mary"))            # log p(" Mary" | p)  # doctest: +SKIP
    >>> lm.score(p, il.Contrast(" Mary", " John"))    # logit(" Mary") - logit(" John")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
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


def gather_at(values: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``values[i, pos[i]]`` for every row: ``[batch, pos, ...]``, ``[batch]`` -> ``[batch, ...]``."""
    return values[torch.arange(values.shape[0], device=values.device), pos.to(values.device)]


_TARGET_KINDS: dict[str, type["Target"]] = {}
# Target kinds defined outside this module, imported when a dict names them.
_KIND_MODULES = {"Answers": "interpretlm.datasets.base", "GreaterThan": "interpretlm.datasets.greater_than"}


class Target(ABC):
    """Base class of what is explained: immutable data; ``bind(lm)`` gives a bound copy.

    A bound target prepares a batch (``prepare(lm, batch)``) and maps a forward pass to
    ``[batch]`` values (``__call__(out)``). Subclasses are frozen dataclasses; they compute
    what depends on the model in :meth:`_bind`, which stores it on the copy only.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> t = il.NextToken(5)
        >>> bound = t.bind(tiny_lm("llama"))
        >>> bound is t, bound.is_bound, t.is_bound
        (False, True, False)
        >>> il.Target.from_dict(t.to_dict()) == t
        True
    """

    needs_logits: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _TARGET_KINDS[cls.__name__] = cls

    # -------------------------------------------------------------- binding
    @property
    def is_bound(self) -> bool:
        return "_lm" in self.__dict__

    def bind(self, lm: "LM") -> "Target":
        """A copy of this target checked against ``lm`` and holding its token ids; ``self`` is unchanged."""
        if self.needs_logits and not lm.has_head:
            raise TargetError(
                f"{type(self).__name__} needs a language-model head; this model has none. "
                "Use il.PooledEmbedding(...) for an encoder without a head, or load it with a head.")
        new = copy.copy(self)
        for key, value in self._bind(lm).items():
            object.__setattr__(new, key, value)
        object.__setattr__(new, "_lm", lm)
        return new

    def _bind(self, lm: "LM") -> dict[str, Any]:
        """What the bound copy holds besides the model (token ids...); checks the target."""
        return {}

    def _model(self) -> "LM":
        if not self.is_bound:
            raise TargetError(f"This {type(self).__name__} is not bound to a model: use target.bind(lm) "
                              "(methods do this for you).")
        return self.__dict__["_lm"]

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        """The batch to run for this target (default: unchanged); called on a bound target."""
        return batch

    @abstractmethod
    def __call__(self, out: "Output") -> torch.Tensor:
        """``[batch]`` values of the target on one forward pass (of a bound target)."""

    # -------------------------------------------------------------- plain data
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description that :meth:`Target.from_dict` turns back into an equal target."""
        return {"kind": type(self).__name__, **{f.name: _plain(getattr(self, f.name)) for f in fields(self)}}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Target":
        """Rebuild a target from :meth:`to_dict` (any kind, also the datasets' ``Answers``)."""
        if not isinstance(d, Mapping) or "kind" not in d:
            raise TargetError(f"Not a target description: {d!r} (expected a dict with a 'kind').")
        kind = d["kind"]
        if kind not in _TARGET_KINDS and kind in _KIND_MODULES:
            importlib.import_module(_KIND_MODULES[kind])
        if kind not in _TARGET_KINDS:
            raise TargetError(f"Unknown target kind {kind!r}; known: {sorted(_TARGET_KINDS)}.")
        return _TARGET_KINDS[kind]._from_fields({k: v for k, v in d.items() if k != "kind"})

    @classmethod
    def _from_fields(cls, values: dict[str, Any]) -> "Target":
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise TargetError(f"{cls.__name__} has no field(s) {sorted(unknown)}; fields: {sorted(names)}.")
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def single_token(lm: "LM", token: str | int, what: str, hint: str | None = None) -> int:
    """The id of ``token`` (a string that is exactly one token, or an id); a helpful error otherwise."""
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


@dataclass(frozen=True)
class NextToken(Target):
    """The model's score for ``token`` as the next token (``[MASK]`` for encoders).

    Args:
        token: a string that is exactly one token (e.g. ``" Mary"`` with its leading
            space) or a token id.
        kind: ``"logprob"`` (default), ``"logit"`` or ``"prob"``.
    """

    token: str | int
    kind: str = "logprob"

    def _bind(self, lm: "LM") -> dict[str, Any]:
        _check_kind(self.kind)
        return {"token_id": single_token(lm, self.token, "NextToken target")}

    def __call__(self, out: "Output") -> torch.Tensor:
        pos = prediction_positions(self._model(), out.batch)
        return _value(gather_at(out.logits, pos), torch.tensor([self.token_id]), self.kind)[:, 0]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "NextToken", "token": self.token, "score": self.kind}

    @classmethod
    def _from_fields(cls, values: dict[str, Any]) -> "Target":
        values = dict(values)
        if "score" in values:  # the dict says "score" because "kind" names the target kind
            values["kind"] = values.pop("score")
        return super()._from_fields(values)


MaskedToken = NextToken
"""For encoders ``NextToken`` reads the prediction at the ``[MASK]`` token; this alias says so."""


@dataclass(frozen=True)
class Contrast(Target):
    """``logit(a) - logit(b)`` at the prediction position (equals the log-prob difference)."""

    a: str | int
    b: str | int

    def _bind(self, lm: "LM") -> dict[str, Any]:
        return {"ids": (single_token(lm, self.a, "Contrast token"), single_token(lm, self.b, "Contrast token"))}

    def __call__(self, out: "Output") -> torch.Tensor:
        row = gather_at(out.logits, prediction_positions(self._model(), out.batch))
        return row[:, self.ids[0]] - row[:, self.ids[1]]


@dataclass(frozen=True)
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

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):  # a tuple keeps the target hashable and immutable
            object.__setattr__(self, "text", tuple(int(t) for t in self.text))

    def _bind(self, lm: "LM") -> dict[str, Any]:
        if not lm.is_causal:
            raise TargetError("Continuation needs a causal (decoder) model; for an encoder use "
                              "NextToken with a [MASK] token.")
        if self.reduce not in ("sum", "mean"):
            raise TargetError(f"reduce must be 'sum' or 'mean'; got {self.reduce!r}.")
        ids = (lm.tokenizer(self.text, add_special_tokens=False)["input_ids"]
               if isinstance(self.text, str) else list(self.text))
        if not ids:
            raise TargetError("The continuation is empty: give at least one token to explain.")
        return {"token_ids": ids}

    def prepare(self, lm: "LM", batch: Batch) -> Batch:
        ids = self.token_ids if self.is_bound else self.bind(lm).token_ids
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



@dataclass(frozen=True)
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

    def _bind(self, lm: "LM") -> dict[str, Any]:
        if not self.verbalizers:
            raise TargetError("Label needs at least one label with its verbalizer tokens.")
        label_ids: dict[str, list[int]] = {}
        for name, toks in self.verbalizers.items():
            toks = [toks] if isinstance(toks, (str, int)) else list(toks)
            label_ids[name] = [single_token(lm, t, f"Verbalizer of {name!r}",
                                            "Verbalizers must be single tokens; pick another word.") for t in toks]
        if self.label is not None and self.label not in label_ids:
            raise TargetError(f"Label {self.label!r} is not one of {list(label_ids)}.")
        return {"label_ids": label_ids}

    def __call__(self, out: "Output") -> torch.Tensor:
        row = torch.log_softmax(gather_at(out.logits, prediction_positions(self._model(), out.batch)).float(), -1)
        per_label = torch.stack([torch.logsumexp(row[:, ids], dim=-1) for ids in self.label_ids.values()], -1)
        which = list(self.label_ids).index(self.label) if self.label is not None else 0
        return torch.log_softmax(per_label, dim=-1)[:, which]



@dataclass(frozen=True, eq=False)
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

    def bind(self, lm: "LM") -> "Target":
        if self.pooling not in ("mean", "first", "last"):
            raise TargetError(f"pooling must be 'mean', 'first' or 'last'; got {self.pooling!r}.")
        if self.dim is not None and not 0 <= self.dim < lm.d_model:
            raise TargetError(f"dim {self.dim} is out of range for d_model={lm.d_model}.")
        return super().bind(lm)

    def _bind(self, lm: "LM") -> dict[str, Any]:
        ref = None
        if isinstance(self.reference, str):
            with torch.no_grad():
                ref_out = lm.forward(self.reference)
            ref = self.pool(ref_out.hidden, ref_out.batch)[0].detach()
        elif self.reference is not None:
            ref = torch.as_tensor(self.reference, dtype=torch.float32)
        return {"_ref": ref}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    @classmethod
    def _from_fields(cls, values: dict[str, Any]) -> "Target":
        values = dict(values)
        for key in ("reference", "direction"):
            if isinstance(values.get(key), list):
                values[key] = torch.tensor(values[key], dtype=torch.float32)
        return super()._from_fields(values)

    def pool(self, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``[batch, pos, d_model]`` -> ``[batch, d_model]``."""
        mask = batch.attention_mask.to(hidden.device, hidden.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            return (hidden * mask).sum(1) / mask.sum(1)
        if self.pooling == "first":
            return hidden[:, 0]
        return gather_at(hidden, batch.last_index)

    def __call__(self, out: "Output") -> torch.Tensor:
        self._model()
        pooled = self.pool(out.hidden, out.batch).float()
        if self._ref is not None:
            return torch.nn.functional.cosine_similarity(pooled, self._ref.to(pooled.device).float().unsqueeze(0), dim=-1)
        if self.direction is not None:
            return pooled @ torch.as_tensor(self.direction, dtype=pooled.dtype, device=pooled.device)
        if self.dim is not None:
            return pooled[:, self.dim]
        return pooled.norm(dim=-1)



@dataclass(frozen=True)
class FunctionTarget(Target):
    """Any ``fn(logits [batch, pos, vocab], batch) -> Tensor[batch]``.

    A module-level function is recorded by its import path, so ``Target.from_dict`` brings
    it back in another process; a lambda or a closure is recorded by name only.
    """

    fn: Callable[[torch.Tensor, Batch], torch.Tensor]
    name: str = "custom"
    needs_logits = False

    def __call__(self, out: "Output") -> torch.Tensor:
        value = self.fn(out.logits if out.logits is not None else out.hidden, out.batch)
        if not isinstance(value, torch.Tensor) or value.shape != (out.batch.size,):
            raise TargetError(f"The target function must return a tensor of shape [batch]=({out.batch.size},); "
                              f"got {getattr(value, 'shape', type(value).__name__)}.")
        return value

    def to_dict(self) -> dict[str, Any]:
        module, qual = getattr(self.fn, "__module__", None), getattr(self.fn, "__qualname__", "")
        path = f"{module}:{qual}" if module and qual and "<" not in qual else None
        return {"kind": "FunctionTarget", "name": getattr(self.fn, "__name__", self.name), "fn": path}

    @classmethod
    def _from_fields(cls, values: dict[str, Any]) -> "Target":
        path = values.get("fn")
        if not isinstance(path, str) or ":" not in path:
            raise TargetError(f"The function of target {values.get('name')!r} was a lambda or a closure, so it "
                              "cannot be rebuilt from a saved description; pass the target again.")
        module, _, qual = path.partition(":")
        fn: Any = importlib.import_module(module)
        for part in qual.split("."):
            fn = getattr(fn, part)
        return cls(fn, name=values.get("name", "custom"))


TargetLike = Union[Target, str, int, Callable[[torch.Tensor, Batch], torch.Tensor]]


def as_target(target: TargetLike, lm: "LM | None" = None) -> Target:
    """A :class:`Target` from a target, a dict (``to_dict``), a single-token string / id
    (``NextToken``) or a callable; bound to ``lm`` when one is given (a new object)."""
    t = _as_target(target)
    return t.bind(lm) if lm is not None else t


def _as_target(target: TargetLike) -> Target:
    if isinstance(target, Target):
        return target
    if isinstance(target, Mapping):
        return Target.from_dict(target)
    if isinstance(target, (str, int)):
        return NextToken(target)
    if callable(target):
        return FunctionTarget(target)
    raise TargetError(f"Cannot explain {target!r}: pass il.NextToken(...), il.Contrast(...), "
                      "il.Continuation(...), il.Label(...), il.PooledEmbedding(...) or a callable.")
