"""The logit lens (nostalgebraist, 2020): read every layer's residual stream through the unembedding.

Each layer's residual stream (``embed`` and every ``resid_post``) goes through the model's
own final norm and head at the prediction position, giving what the model "would say"
if it stopped there: the top tokens, and the rank and probability of a target token.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import CheckWarning, TargetError
from ..registry import CheckSpec, register
from ..results import Result
from ..targets import Contrast, NextToken, single_token, prediction_positions
from ..tokens import Prompts
from ..viz.figures import Bar, Figure, Table, TokenGrid, TokenStrip

if TYPE_CHECKING:
    from ..model import LM


@dataclass(kw_only=True)
class LogitLensResult(Result):
    """Per layer: top tokens at the prediction position, and where the target token stands.

    Attributes:
        prompt: the prompt.
        tokens: its tokens.
        layers: ``"embed"``, then ``"L0"`` .. ``"L{n-1}"`` (each block's output).
        top_tokens: ``[layer][k]`` most likely tokens.
        top_probs: ``[layer, k]`` their probabilities.
        target_token: the tracked token (``None`` without a target).
        target_rank: ``[layer]`` rank of the target token (0 = top).
        target_prob: ``[layer]`` its probability.
        grid_tokens: ``[layer][pos]`` the top token at every position (same forward pass).
        grid_probs: ``[layer, pos]`` its probability.
        position: the prediction position (where ``top_tokens`` and the target are read).
    """

    prompt: str | None = None
    tokens: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    top_tokens: list[list[str]] = field(default_factory=list)
    top_probs: Any = None
    target_token: str | None = None
    target_rank: Any = None
    target_prob: Any = None
    grid_tokens: list[list[str]] = field(default_factory=list)
    grid_probs: Any = None
    position: int | None = None

    def first_layer_top(self) -> str | None:
        """The first layer at which the target token is the top prediction."""
        if self.target_rank is None:
            return None
        for lab, r in zip(self.layers, np.asarray(self.target_rank)):
            if int(r) == 0:
                return lab
        return None

    def summary(self) -> str:
        s = f"model {self.model} · final prediction {self.top_tokens[-1][0]!r}" if self.top_tokens else ""
        if self.target_token is not None:
            s += f" · {self.target_token!r} first on top at {self.first_layer_top() or 'no layer'}"
        return s

    def figures(self) -> dict[str, Figure]:
        """``"grid"`` (a layer × position :class:`TokenGrid` of the top token and its probability;
        with a target, its 1-based rank at the prediction position; results saved before the grid
        existed have none) and ``"lens"``: a table per layer of the top tokens at the prediction
        position (hover: probability), the top probability as a bar and a number and, with a
        target, the target's 1-based rank and probability."""
        probs = np.asarray(self.top_probs, dtype=float)
        figs: dict[str, Figure] = {}
        if self.grid_tokens:
            gp = np.asarray(self.grid_probs, dtype=float)
            marks = None
            if self.target_token is not None:
                last = len(self.tokens) - 1 if self.position is None else self.position
                ranks = np.asarray(self.target_rank)
                marks = [["" if j != last else f"#{int(ranks[i]) + 1}" for j in range(len(self.tokens))]
                         for i in range(len(self.layers))]
            rows = list(reversed(range(len(self.layers))))  # the output on top, as in a residual stream
            figs["grid"] = TokenGrid(
                [self.layers[i] for i in rows], list(self.tokens), [self.grid_tokens[i] for i in rows],
                gp[rows].tolist(), label="probability of the top token",
                marks=None if marks is None else [marks[i] for i in rows],
                marks_label="" if marks is None else f"1-based rank of {self.target_token!r} (prediction column)",
                title="Logit lens: top next-token prediction at every layer and position")
        rows_t = []
        for i, lab in enumerate(self.layers):
            tops = TokenStrip(self.top_tokens[i], hover=[f"p={p:.3g}" for p in probs[i, :len(self.top_tokens[i])]])
            row = [lab, tops, Bar(float(probs[i, 0]), scale=1.0, width=120), float(probs[i, 0])]
            if self.target_token is not None:
                row += [int(np.asarray(self.target_rank)[i]) + 1, float(np.asarray(self.target_prob)[i])]
            rows_t.append(row)
        head = ["layer", "top tokens", "p(top)", ""] + ([f"rank of {self.target_token!r} (1 = top)", "probability"]
                                                        if self.target_token is not None else [])
        figs["lens"] = Table(head, rows_t, title="At the prediction position")
        return figs


@register("logit_lens", family="circuit analysis", takes="prompt", result=LogitLensResult, target="optional",
          summary="final norm and unembedding applied to every layer's residual stream",
          check=CheckSpec("final_layer_error", 1e-4, advice="the lens at the last layer must reproduce the output."))
def logit_lens(lm: "LM", prompt: Prompts, target: Any = None, *, k: int = 5) -> LogitLensResult:
    """Apply the final norm and unembedding to every layer's residual stream.

    Args:
        lm: the model (with an LM head).
        prompt: one prompt (string or token ids).
        target: a token to track (a single-token string, an id, ``il.NextToken`` or
            ``il.Contrast``, whose first token is tracked), or ``None``.
        k: how many top tokens per layer.

    Returns:
        :class:`LogitLensResult`; ``diagnostics["final_layer_error"]`` is the largest
        probability difference between the lens at the last layer and the model's output
        (0 when the lens reads the model faithfully).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lens = il.logit_lens(tiny_lm("llama"), "When Mary and John went to the store, John gave a drink to",
        ...                      " Mary")
        >>> len(lens.layers)
        3
    """
    t0 = time.perf_counter()
    if not lm.has_head:
        raise TargetError("The logit lens reads layers through the LM head; this model has none.")
    batch = lm.tokenize(prompt)
    if batch.size != 1:
        raise TargetError(f"logit_lens explains one prompt; got {batch.size}. Call it once per prompt.")
    tid, tname = None, None
    if target is not None:
        if isinstance(target, NextToken):
            target = target.token
        elif isinstance(target, Contrast):
            target = target.a
        if not isinstance(target, (str, int)):
            raise TargetError("logit_lens tracks one token: pass a single-token string, an id, il.NextToken or "
                              "il.Contrast.")
        tid = single_token(lm, target, "Logit-lens target")
        tname = lm.tokenizer.decode([tid])
    names = ["embed"] + [f"blocks.{i}.resid_post" for i in range(lm.n_layers)]
    with torch.no_grad():
        with lm.capture(names) as cache:
            out = lm.forward(batch, grad=False)
        pos = prediction_positions(lm, batch).view(1, 1)
        resid = torch.cat([cache[n] for n in names])  # [layer, pos, d_model]
        first = lm.tokenize(prompt)
        logits = lm.logits_at(resid, pos.expand(resid.shape[0], 1))[:, int(pos)]
        probs = torch.softmax(logits.float(), -1)
    final = torch.softmax(out.logits[0, int(pos)].float(), -1)
    err = float((probs[-1] - final).abs().max())
    top = probs.topk(k, dim=-1)
    # every position's top token, one layer at a time from the same captured residual streams
    # (a [layer, pos, vocab] tensor at 512 tokens would be gigabytes)
    grid_ids, grid_p = [], []
    with torch.no_grad():
        every = torch.arange(resid.shape[1], device=resid.device).unsqueeze(0)
        for layer in range(resid.shape[0]):
            p_all = torch.softmax(lm.logits_at(resid[layer:layer + 1], every)[0].float(), -1)  # [pos, vocab]
            best = p_all.max(-1)
            grid_ids.append(best.indices.tolist())
            grid_p.append(best.values.cpu())
    labels = ["embed"] + [f"L{i}" for i in range(lm.n_layers)]
    diagnostics: dict[str, Any] = {"final_layer_error": err, "forward_passes": 1, "seconds": time.perf_counter() - t0}
    if err > 1e-4:
        msg = f"The lens at the last layer differs from the model's output by {err:.2g} in probability."
        warnings.warn(msg, CheckWarning)
    rank = prob = None
    if tid is not None:
        p_t = probs[:, tid]
        rank = (probs > p_t.unsqueeze(1)).sum(-1)
        prob = p_t
    return LogitLensResult(
        model=lm.name, method="logit lens", target=None if tid is None else {"kind": "NextToken", "token": tname},
        policy=first.policy, diagnostics=diagnostics, prompt=batch.prompts[0], tokens=list(batch.tokens[0]),
        layers=labels, top_tokens=[[lm.tokenizer.decode([int(i)]) for i in row] for row in top.indices],
        top_probs=top.values, target_token=tname, target_rank=rank, target_prob=prob,
        grid_tokens=[[lm.tokenizer.decode([i]) for i in row] for row in grid_ids], grid_probs=torch.stack(grid_p),
        position=int(pos))
