"""What "flipped" means for a target, and the batched scorer of candidate texts.

:class:`Goal` turns the target's output into one number ``g`` that the search drives below
zero: an edit *flips* when ``g < 0``. For a :class:`~interpretlm.targets.Label`, ``g`` is the
margin of the originally predicted label over the best other one (the prediction changes
when it turns negative); for a :class:`~interpretlm.targets.Contrast`, the contrast times the
sign it starts with (its sign changes); for any target with a user ``threshold``,
``±(value - threshold)`` (the value crosses the threshold).

:class:`Scorer` evaluates candidate texts in batched forward passes. On causal models, for
targets read at the last position (``NextToken``, ``Contrast``, ``Label``), the rows of one
chunk share a prefix of tokens (every text before the earliest edited word is the
original's); the prefix runs once, its key/value cache is repeated over the rows, and only
the suffixes run, with logits computed at the last position only. ``tokens_run`` and
``tokens_full`` count the token positions computed and those a plain batched pass would
compute, so the saving is measured, not assumed.

With ``fluency=True`` (causal models) the scorer also returns each row's log-perplexity
(mean surprisal of its tokens after the first, special tokens excepted): the suffix pass keeps
the logits of every suffix position instead of the last one only, and the prefix pass's
logits give the prefix's share, so the search can rank candidates by how fluent they read
at no extra query (about a quarter more compute per pass, for the language-model head).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch

from ..errors import InterpretLMError, TargetError
from ..model import LM
from ..targets import Contrast, Label, NextToken, Target, gather_at, prediction_positions
from ..tokens import Batch, special_token_ids


class AlreadyFlippedError(InterpretLMError, ValueError):
    """The target is already on the side the counterfactual should reach: nothing to flip."""


LAST_POSITION_KINDS = (NextToken, Contrast, Label)


@dataclass
class Goal:
    """The number ``g`` a search drives below zero, from a bound target.

    Attributes:
        target: the bound target.
        mode: ``"label"``, ``"sign"`` or ``"threshold"``.
        sign: ``+1`` when ``g = value - threshold``, ``-1`` when ``g = threshold - value``.
        threshold: the threshold (0 for a contrast's sign); ``None`` for labels.
        label_index: for labels, the index of the originally predicted label.
    """

    target: Target
    mode: str
    sign: float = 1.0
    threshold: float | None = None
    label_index: int | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.target.label_ids) if self.mode == "label" else []

    def from_last_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``[rows, vocab]`` logits at the prediction position -> (``g [rows]``, target value
        ``[rows]``, per-label log-probabilities ``[rows, labels]`` or ``None``)."""
        t = self.target
        logits = logits.float()
        if isinstance(t, Label):
            logp = torch.log_softmax(logits, -1)
            per = torch.log_softmax(torch.stack([torch.logsumexp(logp[:, ids], -1) for ids in t.label_ids.values()],
                                                -1), -1)
            which = list(t.label_ids).index(t.label) if t.label is not None else 0
            value = per[:, which]
        elif isinstance(t, Contrast):
            value, per = logits[:, t.ids[0]] - logits[:, t.ids[1]], None
        else:  # NextToken
            value, per = _next_token_value(logits, t), None
        return self.goal(value, per), value, per

    def goal(self, value: torch.Tensor, per_label: torch.Tensor | None) -> torch.Tensor:
        """``g [rows]`` from the target's value ``[rows]`` (and per-label log-probs ``[rows, labels]``)."""
        if self.mode == "label":
            assert per_label is not None
            if self.label_index is None:  # the original input, scored before its side is known
                return torch.zeros_like(value)
            others = per_label.clone()
            others[:, self.label_index] = -math.inf
            return per_label[:, self.label_index] - others.max(-1).values
        return self.sign * (value - float(self.threshold or 0.0))


def _next_token_value(logits: torch.Tensor, t: NextToken) -> torch.Tensor:
    if t.kind == "logit":
        return logits[:, t.token_id]
    logp = torch.log_softmax(logits, -1)[:, t.token_id]
    return logp.exp() if t.kind == "prob" else logp


def make_goal(target: Target, threshold: float | None, direction: str) -> Goal:
    """The :class:`Goal` of a bound target before its starting side is known (see :func:`orient`)."""
    if direction not in ("auto", "down", "up"):
        raise TargetError(f"direction must be 'auto', 'down' or 'up'; got {direction!r}.")
    if threshold is not None:
        if isinstance(target, Label):
            raise TargetError("A Label target flips when the predicted label changes; it takes no threshold.")
        return Goal(target, "threshold", threshold=float(threshold))
    if isinstance(target, Label):
        if direction != "auto":
            raise TargetError("A Label target flips when the predicted label changes; direction does not apply.")
        return Goal(target, "label")
    if isinstance(target, Contrast):
        return Goal(target, "sign", threshold=0.0)
    raise TargetError(f"A {type(target).__name__} target has no natural 'other side': give threshold= (the "
                      "value the counterfactual must cross), e.g. threshold=-3.0 for a log-probability.")


def orient(goal: Goal, value: float, per_label: torch.Tensor | None, direction: str) -> Goal:
    """Fix the goal's side from the original input's value; raise if it is already on the far side."""
    if goal.mode == "label":
        assert per_label is not None
        goal.label_index = int(per_label.argmax())
        return goal
    t = float(goal.threshold or 0.0)
    if direction == "auto":
        if value == t:
            raise AlreadyFlippedError(f"The target's value {value:g} sits exactly on the threshold {t:g}: there is "
                                      "no side to leave. Give another threshold or direction.")
        goal.sign = 1.0 if value > t else -1.0
        return goal
    goal.sign = 1.0 if direction == "down" else -1.0
    if goal.sign * (value - t) <= 0:
        side = "below" if direction == "down" else "above"
        raise AlreadyFlippedError(f"The target's value on the prompt ({value:.4g}) is already {side} the threshold "
                                  f"{t:g} (direction={direction!r}): the prompt itself is a counterfactual. Use "
                                  "the other direction or another threshold.")
    return goal


@dataclass
class Scores:
    """Scores of evaluated rows: ``g``, target value and per-label log-probs (``[rows]`` / ``[rows, labels]``),
    and each row's log-perplexity ``[rows]`` (``None`` unless the scorer computes fluency)."""

    goal: torch.Tensor
    value: torch.Tensor
    per_label: torch.Tensor | None
    log_ppl: torch.Tensor | None = None


class Scorer:
    """Batched evaluation of token-id rows for a :class:`Goal`, counting queries and token positions.

    Args:
        lm: the model.
        goal: what is scored.
        batch_size: rows per forward pass.
        reuse_cache: run the shared prefix once per chunk and reuse its key/value cache
            (causal models, targets read at the last position); otherwise plain batched passes.
        fluency: also compute each row's log-perplexity under the model (causal models only).
    """

    def __init__(self, lm: LM, goal: Goal, batch_size: int = 32, reuse_cache: bool = True,
                 fluency: bool = False) -> None:
        self.lm, self.goal, self.batch_size = lm, goal, batch_size
        self.fluency = bool(fluency and lm.is_causal)
        self._special = sorted(special_token_ids(lm.tokenizer))
        self.cached = bool(reuse_cache and lm.is_causal and isinstance(goal.target, LAST_POSITION_KINDS))
        params = inspect.signature(lm.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep = "logits_to_keep" in params
        self.queries = 0          # rows evaluated (model evaluations of one input each)
        self.forward_passes = 0   # batched calls of the model
        self.tokens_run = 0       # token positions computed
        self.tokens_full = 0      # token positions a plain batched pass computes (padding included)

    def rows(self, rows: list[list[int]]) -> Scores:
        """Scores of ``rows`` (token ids, specials included, as ``lm.tokenize`` gives them)."""
        outs = [self._chunk(rows[s:s + self.batch_size]) for s in range(0, len(rows), self.batch_size)]
        per = None if outs[0].per_label is None else torch.cat([o.per_label for o in outs])
        ppl = None if outs[0].log_ppl is None else torch.cat([o.log_ppl for o in outs])
        return Scores(torch.cat([o.goal for o in outs]), torch.cat([o.value for o in outs]), per, ppl)

    def next_token_logprobs(self, rows: list[list[int]]) -> torch.Tensor:
        """``[rows, longest, vocab]`` log-probabilities of the next token at every position of ``rows``
        (right-padded; positions past a row's end are padding), in one plain batched pass, counted
        as ``len(rows)`` queries."""
        ids, mask = self._padded(rows)
        with torch.no_grad(), self.lm.running():
            logits = self.lm.model(input_ids=ids.to(self.lm.device), attention_mask=mask.to(self.lm.device),
                                   use_cache=False).logits
        self.forward_passes += 1
        self.tokens_run += ids.numel()
        return torch.log_softmax(logits.float(), -1).cpu()

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and attention mask ``[rows, longest]``; the rows are counted as queries."""
        n, longest = len(rows), max(len(r) for r in rows)
        self.queries += n
        self.tokens_full += n * longest
        pad = self.lm.tokenizer.pad_token_id if self.lm.tokenizer.pad_token_id is not None else 0
        ids = torch.full((n, longest), pad, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return ids, mask

    def _chunk(self, rows: list[list[int]]) -> Scores:
        n, longest = len(rows), max(len(r) for r in rows)
        ids, mask = self._padded(rows)
        last = mask.sum(1) - 1
        if not self.cached:
            return self._plain(ids, mask)
        shared = _shared_prefix(rows)
        prefix = min(shared, min(len(r) for r in rows) - 1)  # every row keeps at least one token to run
        dev = self.lm.device
        with torch.no_grad(), self.lm.running():
            cache, pre_logits = None, None
            if prefix > 0:
                pre_kw = {"logits_to_keep": 1} if self._keep and not self.fluency else {}
                pre = self.lm.model(input_ids=ids[:1, :prefix].to(dev), use_cache=True, **pre_kw)
                cache = getattr(pre, "cache", None) or pre.past_key_values
                cache.batch_repeat_interleave(n)
                pre_logits = pre.logits[0].float()  # [prefix or 1, vocab]
                self.forward_passes += 1
            kwargs = {"input_ids": ids[:, prefix:].to(dev), "attention_mask": mask.to(dev),
                      "use_cache": cache is not None}
            if cache is not None:
                kwargs[self._cache_kw] = cache
            local = (last - prefix)
            if self.fluency:  # every suffix position's logits: the rows' surprisal, then the goal at the last
                logits = self.lm.model(**kwargs).logits.float()  # [n, longest - prefix, vocab]
                row_logits = logits[torch.arange(n), local.to(logits.device)]
                full = logits if pre_logits is None else torch.cat(
                    [pre_logits[None].expand(n, -1, -1), logits], 1)  # [n, longest, vocab] at positions 0..
                log_ppl = self._log_ppl(full, ids, mask)
            elif self._keep:  # logits at the rows' last positions only: the head is a large part of the cost
                keep = torch.unique(local)
                kwargs["logits_to_keep"] = keep.to(dev)
                logits = self.lm.model(**kwargs).logits  # [n, len(keep), vocab]
                at = torch.searchsorted(keep, local)
                row_logits = logits[torch.arange(n), at.to(logits.device)]
            else:
                logits = self.lm.model(**kwargs).logits
                row_logits = logits[torch.arange(n), local.to(logits.device)]
        self.forward_passes += 1
        self.tokens_run += prefix + n * (longest - prefix)
        g, value, per = self.goal.from_last_logits(row_logits)
        return Scores(g.cpu(), value.cpu(), None if per is None else per.cpu(),
                      log_ppl if self.fluency else None)

    def log_ppl_of(self, logits: torch.Tensor, ids: torch.Tensor) -> float:
        """Log-perplexity of one row from its logits ``[pos, vocab]`` and ids ``[pos]`` (as the scorer measures it)."""
        return float(self._log_ppl(logits[None], ids[None], torch.ones(1, len(ids), dtype=torch.long))[0])

    def _log_ppl(self, logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean surprisal ``[rows]`` of tokens ``1..`` (not special, not padding) from logits ``[rows, pos, vocab]``
        at positions ``0..`` (position ``j`` predicts token ``j + 1``)."""
        ids = ids.to(logits.device)
        logp = torch.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None])[..., 0]  # [rows, pos - 1]
        use = mask[:, 1:].to(logits.device).bool()
        if self._special:
            use &= ~torch.isin(ids[:, 1:], torch.tensor(self._special, device=logits.device))
        count = use.sum(1)
        total = -(logp * use).sum(1)
        return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan"))).cpu()

    def _plain(self, ids: torch.Tensor, mask: torch.Tensor) -> Scores:
        self.forward_passes += 1
        self.tokens_run += ids.numel()
        batch = self.lm.tokenize([[int(t) for t in row[:int(m.sum())]] for row, m in zip(ids, mask)],
                                 add_special_tokens=False)
        t = self.goal.target
        batch = t.prepare(self.lm, batch)
        with torch.no_grad():
            out = self.lm.forward(batch)
        log_ppl = None
        if self.fluency and out.logits is not None:
            log_ppl = self._log_ppl(out.logits.float(), out.batch.input_ids, out.batch.attention_mask)
        if isinstance(t, LAST_POSITION_KINDS):
            g, value, per = self.goal.from_last_logits(gather_at(out.logits, prediction_positions(self.lm, out.batch)))
        else:
            value, per = t(out).float(), None
            g = self.goal.goal(value, None)
        return Scores(g.cpu(), value.detach().cpu(), None if per is None else per.cpu(), log_ppl)


def _shared_prefix(rows: list[list[int]]) -> int:
    first = rows[0]
    k = len(first)
    for r in rows[1:]:
        j = 0
        top = min(k, len(r))
        while j < top and r[j] == first[j]:
            j += 1
        k = j
    return k


def perplexity(lm: LM, rows: list[list[int]], scored: list[list[bool]], batch_size: int = 16) -> list[float | None]:
    """Perplexity of each row under ``lm`` over its ``scored`` positions (``[rows][pos]``: the
    prompt's own tokens, the first excepted: it has nothing before it); ``None`` for masked models.

    ``exp(-mean log p(token_i | tokens_<i))``.
    """
    if not lm.is_causal:
        return [None] * len(rows)
    out: list[float | None] = []
    for s in range(0, len(rows), batch_size):
        chunk, marks = rows[s:s + batch_size], scored[s:s + batch_size]
        batch = lm.tokenize(chunk, add_special_tokens=False)
        with torch.no_grad():
            logits = lm.forward(batch).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(2, batch.input_ids[:, 1:, None].to(logits.device))[..., 0]
        for i, (row, mark) in enumerate(zip(chunk, marks)):
            use = [j for j in range(1, len(row)) if mark[j]]
            out.append(float(torch.exp(-logp[i, [j - 1 for j in use]].mean())) if use else None)
    return out


def as_rows(batch: Batch) -> list[list[int]]:
    """The unpadded token-id rows of a batch."""
    return [[int(t) for t in row[:int(n)]] for row, n in zip(batch.input_ids, batch.lengths)]
