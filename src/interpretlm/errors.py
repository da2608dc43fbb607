"""Errors raised by interpretlm.

Every bad input raises a subclass of :class:`InterpretLMError` whose message says what
was wrong and what to do instead. They also derive from the matching built-in error
(``ValueError``, ``KeyError``, ...) so existing ``except`` clauses keep working.
"""

from __future__ import annotations


class InterpretLMError(Exception):
    """Base class of every error interpretlm raises on purpose."""


class EmptyInputError(InterpretLMError, ValueError):
    """A prompt (or a list of prompts) with nothing in it."""


class ContextLengthError(InterpretLMError, ValueError):
    """A prompt longer than the model's context window."""


class TokenIdError(InterpretLMError, ValueError):
    """A token id outside the model's vocabulary (negative, or too large)."""


class TargetError(InterpretLMError, ValueError):
    """A target that does not fit the model or the prompt (e.g. several tokens for NextToken)."""


class ComponentError(InterpretLMError, KeyError):
    """An unknown canonical component name, or a layer / head index out of range."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0]) if self.args else ""


class UnsupportedModelError(InterpretLMError, TypeError):
    """A model whose architecture family has no component table."""


class AttentionImplementationError(InterpretLMError, RuntimeError):
    """A request for an attention implementation that conflicts with the one already active."""


class ModelLoadError(InterpretLMError, OSError):
    """A model that cannot be found or loaded (missing package, unsafe format, ...)."""


class ResultFormatError(InterpretLMError, ValueError):
    """A saved result that cannot be read back."""


class OptionError(InterpretLMError, TypeError):
    """An option a method does not take (the message lists the ones it does)."""


class InterpretLMWarning(UserWarning):
    """Base class of every warning interpretlm emits.

    A warning is also recorded in the result it concerns (``result.warnings``), so a saved
    result keeps it. Silence them all with
    ``warnings.simplefilter("ignore", il.InterpretLMWarning)``.
    """


class CheckWarning(InterpretLMWarning):
    """A result's check figure (completeness, conservation, sanity...) is past its threshold."""


class NonFiniteWarning(CheckWarning):
    """NaN or inf in a result (or in the model's output): the result's check fails, and the warning
    says which field holds them and where (usually an intervention or an overflowing dtype)."""
