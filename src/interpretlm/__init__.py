"""interpretlm: explain what large language models do.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()                                    # SmolLM2-135M-Instruct
    >>> lm.score("The capital of France is", il.NextToken(" Paris"))
"""

from __future__ import annotations

from . import architectures, interventions, viz
from .errors import (
    ComponentError,
    ContextLengthError,
    EmptyInputError,
    InterpretLMError,
    ModelLoadError,
    ResultFormatError,
    TargetError,
    UnsupportedModelError,
)
from .hooks import Cache
from .loading import BUILTIN, DEFAULT_MODEL, cache_dir, load
from .model import LM, ModelInfo, Output
from .results import Result
from .targets import (
    Contrast,
    Continuation,
    FunctionTarget,
    Label,
    MaskedToken,
    NextToken,
    PooledEmbedding,
    Target,
    as_target,
)
from .tokens import Batch

__version__ = "0.1.0"


class _Ablate:
    """``il.ablate``: the ablation edits (``il.ablate.zero / mean / resample``, from
    :mod:`interpretlm.interventions`) and, called as a function, the circuit-analysis
    ablation experiment ``il.ablate(lm, prompts, target, ...)`` (:func:`interpretlm.circuits.ablate`).

    It lives here, in the public API layer, because the core (``interventions``) must not
    import a method package.
    """

    zero = staticmethod(interventions.zero)
    mean = staticmethod(interventions.mean)
    resample = staticmethod(interventions.resample)

    def __call__(self, *args, **kwargs):
        from .circuits import ablate as run_ablation  # imported on first use, as every family
        return run_ablation(*args, **kwargs)

    def __repr__(self) -> str:
        return "il.ablate (zero / mean / resample edits; call it to run an ablation experiment)"


ablate = _Ablate()

# The method families are imported on first use (``il.attribute``...), so ``import interpretlm``
# stays fast and a family's optional dependencies are only needed when it is used.
_LAZY = {
    # feature attribution, SHAP, LRP
    "attribute": "interpretlm.attribution", "faithfulness": "interpretlm.attribution",
    "compare": "interpretlm.attribution", "attribution": "interpretlm.attribution",
    # attention
    "attention": "interpretlm.attention_maps", "attention_rollout": "interpretlm.attention_maps",
    "attention_flow": "interpretlm.attention_maps",
    # probing
    "activations": "interpretlm.probing", "probe": "interpretlm.probing", "probing": "interpretlm.probing",
    # circuits
    "patch": "interpretlm.circuits", "attribution_patch": "interpretlm.circuits",
    "path_patch": "interpretlm.circuits", "logit_lens": "interpretlm.circuits",
    "discover_circuit": "interpretlm.circuits", "circuits": "interpretlm.circuits",
    "datasets": "interpretlm.datasets",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if module.__name__.endswith("." + name) else getattr(module, name)
    raise AttributeError(f"module 'interpretlm' has no attribute {name!r}")

__all__ = [
    "BUILTIN", "DEFAULT_MODEL", "LM", "Batch", "Cache", "ComponentError", "ContextLengthError", "Contrast",
    "Continuation", "EmptyInputError", "FunctionTarget", "InterpretLMError", "Label", "MaskedToken",
    "ModelInfo", "ModelLoadError", "NextToken", "Output", "PooledEmbedding", "Result", "ResultFormatError",
    "Target", "TargetError", "UnsupportedModelError", "ablate", "architectures", "as_target", "cache_dir",
    "interventions", "load", "viz",
]
