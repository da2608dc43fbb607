"""``il.attention``: the attention patterns of chosen layers and heads, kept and nothing more.

Patterns come from the model's own attention modules through the ``blocks.{i}.attn.pattern``
hook (eager attention is switched on only while they are captured). Only the layers and
heads asked for are copied out of each layer as it runs, and the forward pass stops after
the last layer asked for, so asking for one layer of a long prompt never holds all of
them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CheckWarning, ComponentError, EmptyInputError
from ..model import LM
from ..progress import track
from ..registry import CheckSpec, register
from ..results import Result
from ..tokens import Batch, Prompts
from ..viz.figures import AttentionView, Figure, Table
from .summary import METRICS, HeadsSummary, head_scores


def _check_indices(lm: LM, layers: Sequence[int] | None, heads: Sequence[int] | None) -> tuple[list[int], list[int]]:
    return sorted(lm.indices(layers, "layer")), sorted(lm.indices(heads, "head"))


def run_patterns(lm: LM, batch: Batch, layers: list[int], on_pattern, *, stop_early: bool = True) -> None:
    """Run ``batch`` once, calling ``on_pattern(layer, pattern [batch, head, query, key])`` per layer.

    The base model is run (no LM head: a 2,048-token prompt would otherwise make a
    ``[pos, vocab]`` logits tensor), without gradients, and stopped after the last layer.
    """
    def make_read(layer: int):
        return lambda value: on_pattern(layer, value)

    with ExitStack() as stack:
        for i in layers:
            stack.enter_context(lm.hook(f"blocks.{i}.attn.pattern", read=make_read(i)))
        with lm.attention_weights(), torch.no_grad():
            lm.run(batch, until=max(layers) if stop_early else None, head=False)


@dataclass(kw_only=True)
class AttentionResult(Result):
    """Attention patterns of one prompt for the kept layers and heads.

    Attributes:
        prompt: the text (``None`` for token ids).
        tokens: the display string of every token (specials included).
        special: ``[pos]`` whether each token is a special token.
        token_ids: ``[pos]`` the token ids (head summaries need them).
        layers: the kept layers, ascending.
        heads: the kept heads (query heads: with grouped-query attention every query head
            has its own pattern), ascending.
        patterns: ``[layers, heads, query, key]`` float32 attention probabilities.
        n_kv_heads: the model's number of key/value heads.
    """

    prompt: str | None = None
    tokens: list[str] = field(default_factory=list)
    special: list[bool] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    patterns: Any = None
    n_kv_heads: int | None = None

    def pattern(self, layer: int, head: int) -> torch.Tensor:
        """The pattern of one head: ``[query, key]`` (row ``q`` is what token ``q`` attends to)."""
        if layer not in self.layers or head not in self.heads:
            raise ComponentError(f"Layer {layer}, head {head} was not kept; kept layers {self.layers}, heads "
                                 f"{self.heads}. Ask for it with il.attention(lm, prompt, layers=[{layer}]).")
        return torch.as_tensor(self.patterns[self.layers.index(layer), self.heads.index(head)])

    def heads_summary(self) -> HeadsSummary:
        """Entropy, first-token, previous-token, induction, self and distance scores of every kept head.

        Example:
            >>> att = il.attention(lm, "The cat sat on the mat because it was tired")  # doctest: +SKIP
            >>> att.heads_summary().top("previous_token", 3)  # doctest: +SKIP
        """
        scores = head_scores(torch.as_tensor(self.patterns), torch.tensor(self.token_ids))
        return HeadsSummary(list(self.layers), list(self.heads), {k: v.numpy() for k, v in scores.items()})

    def summary(self) -> str:
        return (f"model {self.model} · {len(self.tokens)} tokens · layers {_ranges(self.layers)} · "
                f"heads {_ranges(self.heads)}")

    def figures(self) -> dict[str, Figure]:
        """``"attention"`` (the interactive head and model view) and ``"head_summary"`` (a table;
        beyond 40 heads, the most distinctive heads of each kind)."""
        view = AttentionView.from_patterns(self.tokens, np.asarray(self.patterns), self.layers, self.heads,
                                           special=self.special)
        s = self.heads_summary()
        rows = [(f"L{r['layer']} H{r['head']}", *[r[m] for m in METRICS]) for r in s.rows()]
        if len(rows) > 40:  # keep the page short: the most distinctive heads of each kind
            keep = {(l, h) for m in ("previous_token", "induction", "first_token") for l, h, _ in s.top(m, 8)}
            rows = [r for r, (l, h) in zip(rows, [(r['layer'], r['head']) for r in s.rows()]) if (l, h) in keep]
        return {"attention": view, "head_summary": Table(["head", *METRICS], rows, title="Head summary",
                                                                    nan="previous_token needs 2 tokens; induction needs a token "
                                                                        "repeated in the prompt (no such token here)")}


def _ranges(xs: Sequence[int]) -> str:
    xs = list(xs)
    if len(xs) > 2 and xs == list(range(xs[0], xs[-1] + 1)):
        return f"{xs[0]}–{xs[-1]}"
    return ", ".join(map(str, xs))


@register("attention", family="attention", takes="prompt", result=AttentionResult, target="none",
          summary="attention patterns of every layer and head, head summaries, interactive view",
          check=CheckSpec("row_sum_error", 1e-3, advice="attention rows must sum to 1; the captured weights are not probabilities."),
          demo="interpretlm.attention_maps.demo_section:attention_section", demo_order=20)
def attention(lm: LM, inputs: Prompts | Batch, layers: Sequence[int] | None = None,
              heads: Sequence[int] | None = None, *, chat: bool = False,
              batch_size: int = 1) -> AttentionResult | list[AttentionResult]:
    """Attention patterns of the chosen layers and heads.

    Args:
        lm: the model handle.
        inputs: a prompt or token ids (a list of prompts gives a list of results).
        layers: layer indices to keep (negative counts from the end); ``None`` keeps all.
        heads: query-head indices to keep; ``None`` keeps all (with grouped-query
            attention, every query head has its own pattern).
        chat: format the prompt through the model's chat template.
        batch_size: prompts run per forward pass when ``inputs`` is a list.

    Returns:
        :class:`AttentionResult` with ``patterns [layers, heads, query, key]``.

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> lm = il.load()  # doctest: +SKIP
        >>> att = il.attention(lm, "The cat sat on the mat because it was tired", layers=[0, 5, 29])  # doctest: +SKIP
        >>> att.pattern(layer=5, head=3).shape  # [query, key]  # doctest: +SKIP
        torch.Size([11, 11])
    """
    layers, heads = _check_indices(lm, layers, heads)
    batch = lm.tokenize(inputs, chat=chat)
    if batch.input_ids.numel() == 0 or int(batch.lengths.min()) == 0:
        raise EmptyInputError("The prompt has no tokens; give some text or token ids.")
    head_idx = torch.tensor(heads)
    results: list[AttentionResult] = []
    starts = range(0, batch.size, batch_size)
    for start in track(starts, "attention"):
        chunk = batch.rows(start, start + batch_size)
        stacked: dict[str, torch.Tensor] = {}

        def keep(layer: int, value: torch.Tensor) -> None:
            # copy only the asked heads straight into the result, so the layer's full pattern is
            # freed right away and nothing is copied a second time
            if "out" not in stacked:
                b, _, q, k = value.shape
                stacked["out"] = torch.empty(b, len(layers), len(heads), q, k, dtype=torch.float32)
            picked = value if len(heads) == lm.n_heads else value.index_select(1, head_idx.to(value.device))
            stacked["out"][:, layers.index(layer)] = picked

        run_patterns(lm, chunk, layers, keep)
        stacked = stacked["out"]  # [batch, layers, heads, q, k]
        for r in range(chunk.size):
            n = int(chunk.lengths[r])
            pats = stacked[r, :, :, :n, :n].contiguous()
            row_sums = pats.sum(-1)
            row_error = float((row_sums - 1).abs().max())
            if row_error > 1e-3:  # the sanity check: every query's attention is a distribution
                warnings.warn(CheckWarning(f"Attention rows sum to 1 ± {row_error:.2g}, not 1: the captured weights are not "
                              "softmax probabilities (a custom attention function?)."), stacklevel=2)
            results.append(AttentionResult(
                model=lm.name, method="attention", policy=dict(batch.policy),
                prompt=chunk.prompts[r], tokens=list(chunk.tokens[r]),
                special=[bool(x) for x in chunk.special[r, :n]],
                token_ids=[int(x) for x in chunk.input_ids[r, :n]], layers=layers, heads=heads,
                patterns=pats, n_kv_heads=lm.n_kv_heads,
                diagnostics={"forward_passes": 1, "row_sum_error": row_error,
                             "kept_bytes": int(pats.numel() * 4),
                             "layers_run": max(layers) + 1}))
    single = isinstance(inputs, str) or (batch.size == 1 and not _is_list_of_rows(inputs))
    return results[0] if single else results


def _is_list_of_rows(inputs: Any) -> bool:
    if isinstance(inputs, Batch):
        return inputs.size > 1
    if isinstance(inputs, torch.Tensor):
        return inputs.dim() == 2
    return isinstance(inputs, (list, tuple)) and len(inputs) > 0 and not isinstance(inputs[0], int)
