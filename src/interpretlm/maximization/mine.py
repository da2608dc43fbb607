"""``il.maximize(lm, units, corpus=..., method="mine")``: top-activating windows of a corpus (the registered method)."""

from __future__ import annotations

from typing import Any

import torch

from ..registry import CheckSpec, register
from ..units import BoundUnits, bind_units
from .corpus import corpus as as_corpus
from ..unit_reads import fetch_windows, logit_effects, output_direction, window_values
from .mining import GLU_COMBOS, MiningError, _check_positive, _plain_ex, run_pass
from .result import MinedExamples

_CHECK = CheckSpec(
    "recompute_error", 1e-3,
    advice="the streamed maxima differ from a fresh forward pass of the same windows: the corpus changed while "
           "mining (a resumed folder over an edited file?) or the model is not deterministic.")


def check_options(*, k: int, window: int, batch_size: int, bands: int, samples: int, bins: int, hist_every: int,
                  checkpoint_every: int, detail: int, max_windows: int | None, **_: Any) -> None:
    """Refuse option values mining cannot use (:class:`MiningError`), before any work."""
    _check_positive(k=k, window=window, batch_size=batch_size, bands=bands, samples=samples, bins=bins,
                    hist_every=hist_every, checkpoint_every=checkpoint_every)
    if detail < 0:
        raise MiningError(f"detail must be >= 0; got {detail}.")
    if max_windows is not None:
        _check_positive(max_windows=max_windows)


def _unit_dict(u: Any) -> dict[str, Any]:
    """``u.to_dict()``, built directly for a plain index unit (all neurons of all layers: 46,080 of them)."""
    if u.direction is None and u.dictionary is None:
        return {"component": u.component, "index": u.index, "direction": None}
    return u.to_dict()


def _gather(idx: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.where(idx >= 0, idx // window, -1), torch.where(idx >= 0, idx % window, -1)


@register("mine", verb="maximize", family="maximization", takes="unit", result=MinedExamples, target="none",
          summary="top-activating corpus windows, quantile samples, histograms (all units, one streaming pass)",
          check=_CHECK, demo="interpretlm.maximization.demo:section", demo_order=70)
def mine(lm: Any, units: Any, *, corpus: Any = "builtin", k: int = 20, window: int = 64, batch_size: int = 16,
         bands: int = 6, samples: int = 4, bins: int = 48, hist_every: int = 4, fire_threshold: float = 0.0,
         rare_frequency: float = 1e-4, glu_split: bool = True, detail: int = 8, path: str | None = None,
         checkpoint_every: int = 2048, max_windows: int | None = None, seed: int = 0) -> MinedExamples:
    """Mine a corpus for the windows where units are largest, in one streaming pass for all units.

    Args:
        lm: the model handle.
        units: ``il.Unit(...)``, ``il.Unit.all(...)`` or a list of them (any number: every
            neuron of every layer is one pass).
        corpus: ``"builtin"`` (1.02M tokens of the King James Bible), a ``.txt`` / ``.jsonl``
            path, a ``datasets`` folder, a list of texts or an :func:`il.corpus <corpus>`.
        k: top windows kept per unit (and per gate × up sign combination of gated neurons).
        window: tokens per window; batch_size: windows per forward pass.
        bands, samples: quantile sampling: bands of each unit's range, windows kept per band.
        bins: histogram bins per unit; hist_every: the histogram counts every ``hist_every``-th
            token of a window (1: all; mean, sd and frequency always count all).
        fire_threshold: a unit fires on a token whose value exceeds this.
        rare_frequency: units firing on fewer tokens than this share are reported rare.
        glu_split: split gated-MLP neurons by the signs of gate and up.
        detail: the first ``detail`` units get their examples recomputed token by token.
        path: a folder to write the pass to (a store: one state per shard of ``checkpoint_every``
            windows); the same call resumes an interrupted pass and reopens a finished one.
        checkpoint_every: windows a shard (rounded up to whole batches): the most an interruption costs.
        max_windows: read at most this many windows (a quick look at a long corpus).
        seed: seeds the quantile reservoir.

    Returns:
        :class:`MinedExamples`: ``top_values [n_units, k]`` and their windows, quantile
        samples ``[n_units, bands, samples]``, histograms ``[n_units, bins]``, dead and rare
        units, GLU splits and, for the detailed units, examples and logit effects.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> texts = ["the cat sat on the mat and the dog ran off"] * 8
        >>> r = il.maximize(lm, il.Unit("blocks.1.mlp.neurons", 3), corpus=texts, k=3, window=8)
        >>> r.top_values.shape, r.check.passed
        (torch.Size([1, 3]), True)
    """
    check_options(k=k, window=window, batch_size=batch_size, bands=bands, samples=samples, bins=bins,
                  hist_every=hist_every, checkpoint_every=checkpoint_every, detail=detail, max_windows=max_windows)
    bound = bind_units(lm, units)
    c = as_corpus(corpus)
    state, facts = run_pass(lm, bound, c, k=k, window=window, batch_size=batch_size, bands=bands, samples=samples,
                            bins=bins, hist_every=hist_every, fire_threshold=float(fire_threshold), glu_split=glu_split, path=path,
                            checkpoint_every=checkpoint_every, seed=seed, max_windows=max_windows)
    t = state.t
    n_tok = max(state.n_tokens, 1)
    freq = t["n_fire"].double() / n_tok
    mean = t["s1"] / n_tok
    std = (t["s2"] / n_tok - mean ** 2).clamp_min(0).sqrt()
    top_w, top_p = _gather(t["top_i"], window)                           # [n, k]
    q_ok = torch.isfinite(t["q_key"])
    q_v = torch.where(q_ok, t["q_v"], torch.nan)                          # [n, bands, samples]
    q_w, q_p = _gather(torch.where(q_ok, t["q_i"], -1), window)
    glu_units = facts["glu_units"]
    g_ok = torch.isfinite(t["glu_key"])
    g_v = torch.where(g_ok, t["glu_v"], torch.nan)                        # [g, 4, k]
    g_w = torch.where(g_ok, t["glu_i"], -1)                               # windows; positions found below
    g_tokens = t["glu_n"].sum(1, keepdim=True).clamp_min(1)
    names = bound.names
    result = MinedExamples(
        unit_names=names, units=[_unit_dict(u) for u in bound.units], corpus=c.to_dict() if c.kind != "texts"
        else {"kind": "texts", "n_texts": len(c.texts or ())}, window=window, n_windows=state.windows_done,
        n_tokens=state.n_tokens, top_values=t["top_v"].clone(), top_windows=top_w, top_positions=top_p,
        quantile_values=q_v, quantile_windows=q_w, quantile_positions=q_p, hist_counts=t["hist"],
        hist_range=t["hist_range"], mean=mean.float(), std=std.float(), frequency=freq.float(),
        glu_names=[names[j] for j in glu_units], glu_frequency=(t["glu_n"].double() / g_tokens).float(),
        glu_values=g_v, glu_windows=g_w,
        dead=[names[j] for j in (t["n_fire"] == 0).nonzero().flatten().tolist()],
        rare=[names[j] for j in ((freq > 0) & (freq < rare_frequency)).nonzero().flatten().tolist()])

    # ---- examples of the first `detail` units, recomputed token by token
    det = list(range(min(detail, len(names))))
    recompute = 0.0
    if det:
        wanted: set[int] = set()
        for j in det:
            wanted |= set(top_w[j].tolist()) | set(q_w[j].flatten().tolist())
            if names[j] in result.glu_names:
                wanted |= set(g_w[result.glu_names.index(names[j])][:, :5].flatten().tolist())
        wanted.discard(-1)
        ids = fetch_windows(c, lm.tokenizer, window, wanted)
        order = sorted(ids)
        sub = BoundUnits.build(lm, [bound.units[j] for j in det])
        vals = window_values(lm, sub, [ids[w] for w in order], batch_size)   # [n_win, W, n_det]
        row = {w: i for i, w in enumerate(order)}
        strs = {w: lm.to_str_tokens(ids[w]) for w in order}

        def example(w: int, p: int, d: int) -> dict[str, Any]:
            return dict(_plain_ex(strs[w], vals[row[w], :, d], p), window=w)

        for d, j in enumerate(det):
            top = [example(int(w), int(p), d) for w, p in zip(top_w[j], top_p[j])]
            scale = max(abs(float(t["top_v"][j, 0])), 1e-6)
            recompute = max(recompute, max(abs(e["max"] - float(v)) / scale for e, v in zip(top, t["top_v"][j])))
            quant = [[b + 1, example(int(w), int(p), d)] for b in range(bands)
                     for w, p in zip(q_w[j, b], q_p[j, b]) if int(w) >= 0][::-1]
            entry: dict[str, Any] = {"top": top, "quantiles": quant}
            if names[j] in result.glu_names:
                g = result.glu_names.index(names[j])
                # the token of each window is the one whose recomputed value is the streamed one
                entry["glu"] = {combo: [example(int(w), int((vals[row[int(w)], :, d] - float(x)).abs().argmin()), d)
                                        for w, x in zip(g_w[g, ci, :5], g_v[g, ci, :5]) if int(w) >= 0]
                                for ci, combo in enumerate(GLU_COMBOS)}
            result.examples[names[j]] = entry
            direction = output_direction(lm, bound.units[j])
            eff = logit_effects(lm, direction) if direction is not None else None
            if eff is not None:
                hi, lo = eff.topk(10), (-eff).topk(10)
                result.logit_effects[names[j]] = {
                    "promoted": [[lm.to_str_tokens([int(i)])[0], float(v)] for v, i in zip(hi.values, hi.indices)],
                    "suppressed": [[lm.to_str_tokens([int(i)])[0], -float(v)] for v, i in zip(lo.values, lo.indices)]}
    result.diagnostics = {"recompute_error": recompute if det else None, "seconds": facts["seconds"],
                          "forward_passes": facts["forward_passes"], "windows": state.windows_done,
                          "tokens": state.n_tokens, "units": len(names), "dead_units": len(result.dead),
                          "rare_units": len(result.rare)}
    return result
