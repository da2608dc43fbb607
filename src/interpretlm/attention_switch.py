"""The one switch of a model's attention implementation (eager, SDPA, or a custom function).

Patterns (which need attention probabilities) and LRP (which needs its own attention
rule) both switch through :class:`AttentionSwitch`, one per :class:`~interpretlm.model.LM`
(``lm.attention_implementation``, ``lm.attention_weights``, ``lm.running``). The switch is
re-entrant, serialises concurrent callers, and leaves Transformers' process-wide
registries as they were outside the call.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .errors import AttentionImplementationError, UnsupportedModelError


class AttentionSwitch:
    """The attention-implementation state of one model, shared by every caller of its :class:`LM`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._cond = threading.Condition()
        self._owner: int | None = None           # the thread whose switch is active
        self._stack: list[tuple[Any, str, bool]] = []
        self._passes: dict[int, int] = {}        # forward passes running, per thread

    @contextmanager
    def use(self, implementation: str | Callable[..., Any], *,
                                 returns_weights: bool | None = None) -> Iterator[str]:
        """Run the model's attention with ``implementation`` inside the block only.

        The one switch of the attention implementation (patterns and LRP use it). It is
        re-entrant (nesting the same implementation is free) and safe for concurrent
        callers: one thread at a time holds a switch, for the whole block; a second thread
        asking for a switch, or running a forward pass (:meth:`running`), waits instead of
        racing; a switch waits for other threads' forward passes to end; and a custom function only runs for the thread that
        switched it on (other threads' forward passes keep the previous kernel). Transformers' process-wide registries are left as
        they were: a custom function is registered under a private, unique key (with eager
        float masks) only for the duration of the block.

        Args:
            implementation: a Transformers name (``"eager"``, ``"sdpa"``) or an attention
                function ``fn(module, query, key, value, attention_mask, scaling=None,
                dropout=0.0, **kwargs) -> (out [batch, pos, head, d_head], weights)``
                with ``query [batch, head, q, d_head]``.
            returns_weights: whether the implementation's second output is the attention
                probabilities ``[batch, head, query, key]`` (default: only for ``"eager"``).
                Inside such an implementation, :meth:`weights` keeps it.

        Yields:
            the key the model's config is set to while the block runs.

        Raises:
            AttentionImplementationError: a different implementation is already active
                (nested in the same thread).

        Example:
            >>> from interpretlm.testing import tiny_lm
            >>> lm = tiny_lm("llama")
            >>> with lm.attention_implementation("eager"):  # LM's method is this one
            ...     lm.model.config._attn_implementation
            'eager'
        """
        weights = implementation == "eager" if returns_weights is None else bool(returns_weights)
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                active, key, _ = self._stack[-1]
                if not (active is implementation or (isinstance(active, str) and active == implementation)):
                    raise AttentionImplementationError(
                        f"The model is running attention implementation {_attn_label(active)} in this block; "
                        f"{_attn_label(implementation)} cannot be switched on inside it. Leave the block first.")
                self._stack.append(self._stack[-1])
                outermost = False
            else:
                # wait for other threads' switches and forward passes (a pass must not see the
                # kernel, or the mask format, change half-way)
                self._cond.wait_for(lambda: self._owner is None and not any(
                    n for t, n in self._passes.items() if t != me))
                self._owner, outermost = me, True
        if not outermost:
            try:
                yield key
            finally:
                with self._cond:
                    self._stack.pop()
            return
        previous = self.model.config._attn_implementation
        key = implementation if isinstance(implementation, str) else f"interpretlm_{uuid.uuid4().hex[:12]}"
        try:
            if not isinstance(implementation, str):
                _register_attention(key, _thread_scoped(implementation, previous))
            try:
                if key != previous:
                    _set_attention(self.model, key)
                    if self.model.config._attn_implementation != key:
                        raise UnsupportedModelError(
                            f"{type(self.model).__name__} does not let its attention function be chosen "
                            f"(Transformers' AttentionInterface), so it cannot run {_attn_label(implementation)}.")
                self._stack.append((implementation, key, weights))
                try:
                    yield key
                finally:
                    self._stack.pop()
            finally:
                if self.model.config._attn_implementation != previous:
                    _set_attention(self.model, previous)
                if not isinstance(implementation, str):
                    _unregister_attention(key)
        finally:
            with self._cond:
                self._owner = None
                self._cond.notify_all()

    @contextmanager
    def running(self) -> Iterator[None]:
        """Mark a forward pass of this thread on the model (``forward``, ``run`` and replays use it).

        Waits while another thread has switched the attention implementation, and keeps other
        threads' switches out until the pass ends, so a pass never sees the kernel (or the mask
        format) change half-way. Free when nothing is switched.
        """
        me = threading.get_ident()
        with self._cond:
            self._cond.wait_for(lambda: self._owner in (None, me))
            self._passes[me] = self._passes.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._passes[me] -= 1
                if not self._passes[me]:
                    del self._passes[me]
                self._cond.notify_all()

    @contextmanager
    def weights(self) -> Iterator[None]:
        """Make attention modules return their probabilities inside the block only.

        Keeps the active implementation when it returns weights (LRP's attention rule:
        patterns captured inside LRP are LRP's own), else switches to eager attention.

        Raises:
            AttentionImplementationError: an implementation that returns no weights is
                active in this thread.
        """
        with self._cond:
            keep = self._owner == threading.get_ident() and self._stack[-1][2]
        if keep:
            yield
            return
        with self.use("eager"):
            yield

def _attn_label(implementation: Any) -> str:
    return repr(implementation) if isinstance(implementation, str) else \
        f"function {getattr(implementation, '__qualname__', type(implementation).__name__)!r}"


_REGISTRY_LOCK = threading.Lock()


def _thread_scoped(fn: Callable[..., Any], previous: str) -> Callable[..., Any]:
    """``fn`` for the calling thread; other threads' forward passes keep the previous kernel.

    A custom function (LRP's rules) must not act on a concurrent caller's forward pass, whose
    backward pass it would change. Eager has no registry entry (each model defines its own),
    so other threads then get SDPA, which computes the same attention.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    owner = threading.get_ident()
    other = ALL_ATTENTION_FUNCTIONS[previous] if previous in ALL_ATTENTION_FUNCTIONS else sdpa_attention_forward

    def scoped(*args: Any, **kwargs: Any) -> Any:
        return (fn if threading.get_ident() == owner else other)(*args, **kwargs)
    return scoped


def _register_attention(key: str, fn: Callable[..., Any]) -> None:
    """Add ``fn`` to Transformers' attention registry under ``key``, with eager (float additive) masks."""
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    with _REGISTRY_LOCK:
        ALL_ATTENTION_FUNCTIONS[key] = fn
        AttentionMaskInterface._global_mapping[key] = eager_mask


def _unregister_attention(key: str) -> None:
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    with _REGISTRY_LOCK:
        ALL_ATTENTION_FUNCTIONS._local_mapping.pop(key, None)
        AttentionMaskInterface._global_mapping.pop(key, None)


def _set_attention(model: nn.Module, key: str) -> None:
    try:
        model.set_attn_implementation(key)
    except Exception:  # older Transformers: set the config field directly
        model.config._attn_implementation = key


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: ``[batch, kv_head, pos, d] -> [batch, kv_head * n_rep, pos, d]``.

    Example:
        >>> repeat_kv(torch.arange(4.).view(1, 2, 1, 2), 2)[0, :, 0].tolist()
        [[0.0, 1.0], [0.0, 1.0], [2.0, 3.0], [2.0, 3.0]]
    """
    if n_rep == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, n, d).reshape(b, h * n_rep, n, d)


def attention_inputs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What a custom attention function (``attention_implementation(fn)``) computes with.

    Args:
        query: ``[batch, head, q, d]``; key, value: ``[batch, kv_head, k, d]``;
        attention_mask: Transformers' mask for the call (boolean or additive), or ``None``.

    Returns:
        key and value repeated to every query head ``[batch, head, k, d]``, and the mask as
        an additive ``[batch, 1, q, k]`` tensor (``-inf`` where a key is hidden), or ``None``.

    Example:
        >>> q, kv = torch.zeros(1, 4, 3, 2), torch.zeros(1, 2, 3, 2)
        >>> k, v, m = attention_inputs(q, kv, kv, torch.ones(1, 1, 3, 3, dtype=torch.bool).tril())
        >>> tuple(k.shape), m[0, 0, 0].tolist()
        ((1, 4, 3, 2), [0.0, -inf, -inf])
    """
    n_rep = query.shape[1] // key.shape[1]
    k, v = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    mask = attention_mask
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(~mask, float("-inf"))
    if mask is not None:
        mask = mask[:, :, :, : k.shape[-2]]
    return k, v, mask
