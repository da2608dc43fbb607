"""One progress policy for every long loop.

Every method that loops takes ``progress``:

* ``None`` (default): a bar on stderr in terminals and notebooks, shown only once the
  loop has run for more than two seconds (short calls stay quiet);
* ``False``: no bar; ``True``: a bar even when stderr is not a terminal;
* a callable ``fn(done, total, desc)``: called after every step, instead of a bar.

Every registered method accepts ``progress=`` (the registry applies it to every loop the
method runs, through :func:`policy`), so no family handles it on its own. A caller that
wants every loop inside a block (a web server, a job engine) registers a listener with
:func:`listen`; it is called as well as, not instead of, the bar.

Example:
    >>> from interpretlm.progress import bar, listen
    >>> seen = []
    >>> with listen(lambda done, total, desc: seen.append(done)):
    ...     with bar(3, "steps", progress=False) as b:
    ...         for _ in range(3):
    ...             b.update()
    >>> seen
    [1, 2, 3]
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar, Union

from tqdm.auto import tqdm

Callback = Callable[[int, int, str], None]
ProgressLike = Union[bool, Callback, None]

_listeners: contextvars.ContextVar[tuple[Callback, ...]] = contextvars.ContextVar("interpretlm_progress", default=())
_policy: contextvars.ContextVar[ProgressLike] = contextvars.ContextVar("interpretlm_progress_policy", default=None)
T = TypeVar("T")
DELAY_S = 2.0


def _interactive() -> bool:
    if sys.stderr is not None and sys.stderr.isatty():
        return True
    return "ipykernel" in sys.modules  # a notebook: tqdm.auto draws a widget


class Bar:
    """A progress bar plus callbacks; use as a context manager, call :meth:`update`."""

    def __init__(self, total: int, desc: str, progress: ProgressLike = None, initial: int = 0) -> None:
        self.total, self.desc, self.done = int(total), desc, int(initial)
        if progress is None:
            progress = _policy.get()
        self._callbacks = list(_listeners.get())
        if callable(progress) and not isinstance(progress, bool):
            self._callbacks.append(progress)
            show = False
        else:
            show = _interactive() if progress is None else bool(progress)
        self._tqdm = tqdm(total=self.total, desc=desc, leave=False, delay=0 if progress is True else DELAY_S,
                          disable=not show or self.total <= 1, initial=self.done)

    def update(self, n: int = 1) -> None:
        self.done += n
        self._tqdm.update(n)
        for cb in self._callbacks:
            cb(self.done, self.total, self.desc)

    def close(self) -> None:
        self._tqdm.close()

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(total: int, desc: str, progress: ProgressLike = None, initial: int = 0) -> Bar:
    """A :class:`Bar` for a loop of ``total`` steps following the policy above."""
    return Bar(total, desc, progress, initial)


def track(items: Iterable[T], desc: str, progress: ProgressLike = None, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a :class:`Bar` (one step per item)."""
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    with bar(len(items) if total is None else total, desc, progress) as b:  # type: ignore[arg-type]
        for item in items:
            yield item
            b.update()


@contextmanager
def policy(progress: ProgressLike) -> Iterator[None]:
    """Apply ``progress`` to every bar opened inside the block that was not given its own."""
    token = _policy.set(progress)
    try:
        yield
    finally:
        _policy.reset(token)


@contextmanager
def listen(callback: Callback) -> Iterator[None]:
    """Call ``callback(done, total, desc)`` on every step of every loop run inside the block."""
    token = _listeners.set(_listeners.get() + (callback,))
    try:
        yield
    finally:
        _listeners.reset(token)
