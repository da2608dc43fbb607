"""The attribution methods behind ``il.attribute(..., method=...)``, registered in the core registry.

A method is a function ``fn(lm, inputs, target, **options) -> Attribution``; decorate it with
:func:`register_method` in its own module (import that module from ``attribution/__init__.py``).
Its summary and check figure are declared here, next to the others, so they read as one table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..registry import CheckSpec, UnknownMethodError, method, methods, register
from .result import Attribution

FAMILY = "feature attribution"

_EFFICIENCY = CheckSpec("completeness_error", 0.01,
                        advice="Shapley values must add up to f(x) - f(baseline); raise n_samples.")
_GRADIENT = CheckSpec("gradient_check_error", 0.1,
                      advice="the gradient does not predict the target's change along itself: the target is "
                             "not smooth here, so gradient scores are unreliable; prefer integrated_gradients.")

def _lrp_absorbs(r: Attribution) -> bool:
    """Whether ``r`` comes from a rule that absorbs by design and has a finite ledger to be judged on."""
    share = r.diagnostics.get("absorbed_share")
    # non-finite figures keep the plain name, so the non-finite report names the field that failed
    return (r.options.get("attention_rule") in ("attnlrp-absorbing",) and share is not None
            and bool(np.isfinite(share)) and r.diagnostics.get("ledger_error") is not None)


def _lrp_figure(r: Attribution) -> float | None:
    """LRP's check figure: the conservation error; for a rule that absorbs by design (the default,
    published softmax rule) the error counting the booked absorbed relevance as accounted."""
    return r.diagnostics.get("ledger_error" if _lrp_absorbs(r) else "conservation_error")


def _lrp_check_name(r: Attribution) -> str:
    """``conservation_error``, or ``conservation_error_counting_absorbed_61.6%`` (the share absorbed)."""
    if _lrp_absorbs(r):
        return f"conservation_error_counting_absorbed_{r.diagnostics['absorbed_share']:.1%}"
    return "conservation_error"


#: name -> (one-line summary, check figure)
SPECS: dict[str, tuple[str, CheckSpec | None]] = {
    "saliency": ("gradient norm (or gradient·input) per feature", _GRADIENT),
    "input_x_gradient": ("gradient × input embedding per feature", _GRADIENT),
    "integrated_gradients": ("IG along the straight path, adaptive quadrature",
                             CheckSpec("completeness_error", 0.01, threshold_of=lambda r: r.options.get("tol", 0.01),
                                       advice="raise n_steps or max_evals.")),
    "occlusion": ("target change when each feature is removed",
                  CheckSpec("additivity_error", 1.0,
                            advice="single-feature removals do not account for the change when all are removed: "
                                   "the features interact; prefer a Shapley method.")),
    "lime": ("weighted linear fit on random feature masks (LIME)",
             CheckSpec("r2", 0.5, higher_is_better=True,
                       read=lambda r: min(r.diagnostics["r2"]) if r.diagnostics.get("r2") else None,
                       advice="the local linear fit explains little of the target; raise n_samples.")),
    "exact_shap": ("exact Shapley values (2^F coalitions)", _EFFICIENCY),
    "kernel_shap": ("KernelSHAP with paired sampling", _EFFICIENCY),
    "partition_shap": ("Owen values over a word/span hierarchy", _EFFICIENCY),
    "lrp": ("AttnLRP: one forward and one backward pass",
            CheckSpec("conservation_error", 0.05, read=_lrp_figure, name_of=_lrp_check_name,
                      threshold_of=lambda r: r.options.get("tolerance", 0.05),
                      advice="relevance is not conserved; see diagnostics['absorbed'].")),
}
ALIASES = {"ig": "integrated_gradients"}


def register_method(name: str, result: type[Attribution] = Attribution, demo: str | None = None,
                    demo_order: int = 100) -> Callable[[Callable[..., Attribution]], Callable[..., Attribution]]:
    """Decorator: make ``fn`` available as ``il.attribute(..., method=name)`` (and ``il.method(name)``)."""
    summary, check = SPECS[name]
    return register(name, verb="attribute", family=FAMILY, takes="prompt", result=result, summary=summary,
                    check=check, demo=demo, demo_order=demo_order)


def get_method(name: str) -> Callable[..., Attribution]:
    """The public function of attribution method ``name`` (aliases such as ``"ig"`` accepted)."""
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise UnknownMethodError(f"Unknown attribution method {name!r}. Available: {', '.join(sorted(METHODS))}.")
    return method(name)


class _Methods(dict):
    """``METHODS``: the attribution methods, read live from the core registry."""

    def _live(self) -> dict[str, Any]:
        return {m.name: m for m in methods("attribute")}

    def __contains__(self, name: object) -> bool:
        return name in self._live()

    def __iter__(self):
        return iter(self._live())

    def __len__(self) -> int:
        return len(self._live())

    def __getitem__(self, name: str) -> Any:
        return self._live()[name]

    def keys(self):
        return self._live().keys()


METHODS = _Methods()
