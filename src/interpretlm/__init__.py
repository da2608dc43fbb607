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
from .interventions import ablate
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

__all__ = [
    "BUILTIN", "DEFAULT_MODEL", "LM", "Batch", "Cache", "ComponentError", "ContextLengthError", "Contrast",
    "Continuation", "EmptyInputError", "FunctionTarget", "InterpretLMError", "Label", "MaskedToken",
    "ModelInfo", "ModelLoadError", "NextToken", "Output", "PooledEmbedding", "Result", "ResultFormatError",
    "Target", "TargetError", "UnsupportedModelError", "ablate", "architectures", "as_target", "cache_dir",
    "interventions", "load", "viz",
]
