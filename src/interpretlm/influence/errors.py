"""Errors of the influence family (all are :class:`~interpretlm.errors.InterpretLMError`)."""

from __future__ import annotations

from ..errors import ComponentError, ContextLengthError, EmptyInputError, InterpretLMError


class InfluenceError(InterpretLMError, ValueError):
    """An influence request that cannot be carried out as given."""


class EmptyTrainingSetError(InfluenceError, EmptyInputError):
    """No training texts (or only blank ones) were given."""


class QueryTooLongError(InfluenceError, ContextLengthError):
    """A query (with its target continuation) or a training text does not fit the model's context."""


class UnknownModuleError(InfluenceError, ComponentError):
    """A module selection that names no linear layer of the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FingerprintMismatchError(InfluenceError):
    """An index opened with a model whose weights are not those it was built on."""
