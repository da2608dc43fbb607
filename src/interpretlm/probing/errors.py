"""Errors of the probing family (all are :class:`~interpretlm.errors.InterpretLMError`)."""

from __future__ import annotations

from ..errors import InterpretLMError


class ProbingError(InterpretLMError, ValueError):
    """A probing request that cannot be carried out as given."""


class TaskError(ProbingError):
    """A probing task with bad labels: lengths that differ, unknown label types, too few examples."""


class StoreError(ProbingError):
    """An activation store that does not match the request, or that is damaged."""
