"""The attribution method registry behind ``il.attribute(..., method=...)``.

A method is a function ``fn(lm, inputs, target, **options) -> Attribution``; register it
with :func:`register_method` in its own module and import that module from
``attribution/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import InterpretLMError

METHODS: dict[str, Callable] = {}


class UnknownMethodError(InterpretLMError, ValueError):
    """An attribution method name that is not registered."""


def register_method(*names: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn`` available as ``il.attribute(..., method=name)`` for each name."""
    def deco(fn: Callable) -> Callable:
        for n in names:
            METHODS[n] = fn
        return fn
    return deco


def get_method(name: str) -> Callable:
    if name not in METHODS:
        raise UnknownMethodError(f"Unknown attribution method {name!r}. Available: {', '.join(sorted(METHODS))}.")
    return METHODS[name]
