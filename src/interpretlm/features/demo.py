"""The demo's feature-dictionary section: a small TopK SAE trained on the spot, a feature's top
windows in the built-in corpus, and a steering sweep of that feature."""

from __future__ import annotations

import warnings
from typing import Any

# The demo's budget: 512 features (k = 16) at the residual stream after block 9 (or the middle block),
# trained on DEMO_TOKENS tokens of the built-in corpus. Measured on the default model with 12,000 tokens:
# 106 s of CPU for the whole section (257 s wall on a loaded shared machine), FVU 0.57, CE loss recovered
# 0.79; with 6,000: 94 s of CPU (166 s wall), FVU 0.71, CE recovered 0.73
# (benchmarks/features.py trains the README's larger dictionary).
DEMO_TOKENS = 6_000
DEMO_FEATURES = 512
DEMO_K = 16


def section(lm: Any, prompts: list[str]) -> Any:
    """Train a small dictionary on the default model, show its metrics, its most frequent feature's
    top windows and a steering sweep of that feature."""
    from ..demo import Section
    from ..maximization import maximize
    from ..maximization.corpus import builtin_or
    from ..units import Unit
    from .steering import steer
    from .train import train

    layer = min(9, lm.n_layers // 2)
    corpus, note = builtin_or(prompts, 40)
    lines = [note] if note else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = train(lm, f"blocks.{layer}.resid_post", corpus=corpus, n_features=DEMO_FEATURES, k=DEMO_K,
                    tokens=DEMO_TOKENS, eval_windows=8, progress=False)
        m = sae.metrics
        lines.append(f"{sae!r}: trained on {m['tokens']} tokens in {m['seconds']:.0f} s")
        lines.append(f"fraction of variance unexplained {m['fvu']:.3f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%}, "
                     f"cross-entropy loss recovered {m['ce_loss_recovered']:.3f} "
                     f"(clean {m['ce_clean']:.3f}, spliced {m['ce_spliced']:.3f}, zero-ablated {m['ce_zero_ablated']:.3f})")
        units = [Unit(sae, i) for i in range(sae.n_features)]
        top = maximize(lm, units, corpus=corpus, k=5, window=32, max_windows=60, detail=0, progress=False)
        best = int(top.frequency.argmax()) if top.frequency is not None else 0
        feature = Unit(sae, best)
        one = maximize(lm, feature, corpus=corpus, k=5, window=32, max_windows=60, detail=1, progress=False)
        # strengths in units of the component's typical norm (a residual stream's is ~100s on real models)
        with lm.capture([sae.component]) as cache:
            lm.forward("I think that")
        norm = float(cache[sae.component][0, 1:].norm(dim=-1).mean())
        sweep = steer(lm, feature, strengths=[0.0, round(0.5 * norm, 1), round(norm, 1)], prompts=["I think that"],
                      max_new_tokens=10, progress=False)
    lines.append(f"feature {best} (fires on {float(top.frequency[best]):.1%} of tokens): {one.summary()}")
    for text, value in one.top(3):
        lines.append(f"  {value:+.3f}  ...{text!r}")
    lines.append(f"steering feature {best}: {sweep.summary()}")
    for s, smp in zip(sweep.strengths, sweep.samples):
        lines.append(f"  strength {s:g}: {smp[0]!r}")
    figures = [one.figures()[k] for k in list(one.figures())[:2]] + list(sweep.figures().values())
    return Section(f"Feature dictionaries ({sae.component})", figures, lines)
