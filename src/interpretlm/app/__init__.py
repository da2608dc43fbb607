"""The local web app (``interpretlm serve``): every registered method in one page.

An upper layer like the command line: it iterates the registry and names no family, so
a family registered later appears in the app without changes here. The server
(:mod:`interpretlm.app.server`, Starlette + uvicorn, the ``app`` extra) is imported on
first use, so importing :mod:`interpretlm` never needs it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Limits", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "serve":
        from .serving import serve
        return serve
    if name in __all__:
        from . import server
        return getattr(server, name)
    raise AttributeError(name)
