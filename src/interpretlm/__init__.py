"""interpretlm: explain what large language models do.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()                                    # SmolLM2-135M-Instruct
    >>> lm.score("The capital of France is", il.NextToken(" Paris"))
"""

from __future__ import annotations

from . import architectures, interventions, progress, registry, viz
from .errors import (
    ComponentError,
    ContextLengthError,
    EmptyInputError,
    CheckWarning,
    InterpretLMError,
    InterpretLMWarning,
    OptionError,
    ModelLoadError,
    NonFiniteWarning,
    ResultFormatError,
    TargetError,
    TokenIdError,
    UnsupportedModelError,
)
from .hooks import Cache
from .loading import BUILTIN, DEFAULT_MODEL, cache_dir, load
from .model import LM, ModelInfo, Output
from .registry import method, methods, rerun
from .results import Check, Result
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
from .units import Unit, Units

__version__ = "0.1.0"


class _Ablate:
    """``il.ablate``: the ablation edits (``il.ablate.zero / mean / resample``, from
    :mod:`interpretlm.interventions`) and, called as a function, the circuit-analysis
    ablation experiment ``il.ablate(lm, prompts, target, ...)`` (the registered method ``"ablate"``).

    It lives here, in the public API layer, because the core (``interventions``) must not
    import a method package.
    """

    zero = staticmethod(interventions.zero)
    mean = staticmethod(interventions.mean)
    resample = staticmethod(interventions.resample)

    def __call__(self, *args, **kwargs):
        return registry.call("ablate", *args, **kwargs)

    def __repr__(self) -> str:
        return "il.ablate (zero / mean / resample edits; call it to run an ablation experiment)"


ablate = _Ablate()

# The method families register their verbs in the registry when imported; they are imported
# on first use (``il.attribute``...), so ``import interpretlm`` stays fast and a family's
# optional dependencies are only needed when it is used.
def __getattr__(name: str):
    import importlib

    if name in registry.family_packages():
        return importlib.import_module(f"interpretlm.{name}")
    verbs = registry.verbs()   # imports the families, and with them their job kinds
    from . import jobs

    # il.activations, il.maximize: a job kind's verb, run by an engine (engine="local" by default)
    if any(k.verb == name for k in jobs.kinds().values()):
        return importlib.import_module("interpretlm.engine").verbs()[name]
    if name in verbs:
        return verbs[name]
    for pkg in registry.family_packages():  # names a package exports (il.serve, il.EngineError...)
        module = importlib.import_module(f"interpretlm.{pkg}")
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(f"module 'interpretlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(registry.verbs()) | set(registry.family_packages()))


__all__ = [
    "Check", "CheckWarning", "InterpretLMWarning", "OptionError", "method", "methods", "progress", "registry",
    "rerun", "BUILTIN", "DEFAULT_MODEL", "LM", "Batch", "Cache", "ComponentError", "ContextLengthError", "Contrast",
    "Continuation", "EmptyInputError", "FunctionTarget", "InterpretLMError", "Label", "MaskedToken",
    "ModelInfo", "ModelLoadError", "NextToken", "NonFiniteWarning", "Output", "PooledEmbedding", "Result", "ResultFormatError",
    "Target", "TargetError", "TokenIdError", "UnsupportedModelError", "ablate", "architectures", "as_target", "cache_dir",
    "interventions", "load", "viz", "Unit", "Units",
]
