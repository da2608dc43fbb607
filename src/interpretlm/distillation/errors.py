"""Errors of the distillation family (all are :class:`~interpretlm.errors.InterpretLMError`)."""

from __future__ import annotations

from ..errors import InterpretLMError


class DistillationError(InterpretLMError, ValueError):
    """A distillation request that cannot be carried out as given (task, texts, student config)."""
