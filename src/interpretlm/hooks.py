"""Capture and intervene on canonical components with PyTorch forward hooks.

Both are context managers. Hooks are registered on the original Hugging Face modules
(nothing is replaced or monkey-patched) and are always removed on exit, also when the
body raises. Interventions are plain functions of the activation, so gradients flow
through them unless the function detaches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from .architectures import Site
from .errors import ComponentError

if TYPE_CHECKING:
    from .model import LM

Edit = Callable[[torch.Tensor], "torch.Tensor | None"]


class Cache(dict):
    """Activations captured by :meth:`LM.capture`, keyed by canonical name.

    Holds the values of the last forward pass run inside the context.
    """

    def __init__(self, requested: Iterable[str] = ()) -> None:
        super().__init__()
        self.requested = set(requested)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return super().__getitem__(name)
        except KeyError:
            if name in self.requested:
                raise ComponentError(
                    f"{name!r} was requested but nothing was captured yet: run lm.forward(...) "
                    "inside the `with lm.capture(...)` block.") from None
            raise ComponentError(
                f"{name!r} was not captured; captured names: {sorted(self.requested)}.") from None


def _heads_view(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    return x.view(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_first(output: Any, value: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (value,) + tuple(output[1:])
    return value


def _input_of(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs["hidden_states"]


def _with_input(args: tuple, kwargs: dict, value: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (value,) + tuple(args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = value
    return args, kwargs


def _register(site: Site, n_heads: int, read: Callable[[torch.Tensor], None] | None,
              edit: Edit | None) -> torch.utils.hooks.RemovableHandle:
    """One hook on ``site`` that reads and/or edits its value."""

    def apply(value: torch.Tensor) -> torch.Tensor:
        if edit is not None:
            new = edit(value)
            if new is not None:
                if new.shape != value.shape:
                    raise ComponentError(
                        f"The intervention on {site.name!r} returned shape {tuple(new.shape)}; "
                        f"it must keep the activation's shape {tuple(value.shape)}.")
                value = new
        if read is not None:
            read(value)
        return value

    if site.kind == "output":
        def hook(module, args, output):
            new = apply(_first(output))
            return _with_first(output, new) if edit is not None else None
        return site.module.register_forward_hook(hook)
    if site.kind == "pattern":
        if edit is not None:
            raise ComponentError(
                f"{site.name!r} can be captured but not edited: attention probabilities are "
                "computed inside a functional attention kernel. Edit 'attn.heads' instead.")

        def pattern_hook(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise ComponentError(
                    f"No attention weights came out of {site.name!r}: the model is not running "
                    "eager attention. Capture patterns through lm.capture, which switches it.")
            apply(weights)
        return site.module.register_forward_hook(pattern_hook)
    if site.kind in ("input", "heads"):
        def pre_hook(module, args, kwargs):
            x = _input_of(args, kwargs)
            if site.kind == "heads":
                v = _heads_view(x, n_heads)
                new = apply(v).reshape(x.shape)
            else:
                new = apply(x)
            if edit is None:
                return None
            return _with_input(args, kwargs, new)
        return site.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    raise ComponentError(f"Unknown hook kind {site.kind!r} for {site.name!r}.")


@contextmanager
def capture(lm: "LM", names: Iterable[str] | str, *, grad: bool = False) -> Iterator[Cache]:
    """Record the activations of canonical components during forward passes.

    Args:
        lm: the model handle.
        names: canonical names (``"blocks.3.attn.heads"``); a single string is allowed.
        grad: keep the autograd graph (values stay attached, so you can take gradients
            with respect to them); by default values are detached.

    Yields:
        a :class:`Cache` mapping each name to its tensor: ``[batch, pos, d_model]`` for
        residual / attention / MLP outputs, ``[batch, pos, head, d_head]`` for
        ``attn.heads``, ``[batch, head, query, key]`` for ``attn.pattern``,
        ``[batch, pos, d_mlp]`` for ``mlp.neurons``, ``[batch, pos, vocab]`` for ``unembed``.

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> lm = il.load()  # doctest: +SKIP
        >>> with lm.capture(["blocks.5.resid_post", "blocks.3.attn.pattern"]) as cache:  # doctest: +SKIP
        ...     lm.forward("The cat sat")
        >>> cache["blocks.3.attn.pattern"].shape  # doctest: +SKIP
        torch.Size([1, 9, 3, 3])
    """
    names = [names] if isinstance(names, str) else list(names)
    sites = [lm.site(n) for n in names]
    cache = Cache(names)
    handles = []
    needs_eager = any(s.kind == "pattern" for s in sites)
    try:
        for site in sites:
            if grad and site.kind != "pattern":
                # Make the activation a graph node even when no weight or input needs grad,
                # so that torch.autograd.grad(score, cache[name]) works.
                def keep(value: torch.Tensor, _name: str = site.name) -> torch.Tensor:
                    if not value.requires_grad and torch.is_grad_enabled():
                        value = value.detach().requires_grad_(True)
                    cache[_name] = value
                    return value
                handles.append(_register(site, lm.n_heads, None, keep))
            else:
                def read(value: torch.Tensor, _name: str = site.name) -> None:
                    cache[_name] = value if grad else value.detach()
                handles.append(_register(site, lm.n_heads, read, None))
        if needs_eager:
            with lm.eager_attention():
                yield cache
        else:
            yield cache
    finally:
        for h in handles:
            h.remove()


@contextmanager
def intervene(lm: "LM", edits: dict[str, Edit]) -> Iterator[None]:
    """Replace component activations by functions of them during forward passes.

    Args:
        lm: the model handle.
        edits: ``{canonical name: fn}``; ``fn(activation) -> activation`` (same shape) or
            ``None`` after editing in place. Shapes are those of :func:`capture`.
            Gradients flow through ``fn`` unless it detaches; see
            :mod:`interpretlm.interventions` for ready-made edits (replace, add, scale,
            zero / mean / resample ablation of heads, neurons or positions).

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> lm = il.load()  # doctest: +SKIP
        >>> with lm.intervene({"blocks.3.attn.heads": il.ablate.zero(heads=[2, 5])}):  # doctest: +SKIP
        ...     lm.score("When Mary and John went to the store, John gave a drink to", " Mary")
    """
    sites = [(lm.site(n), fn) for n, fn in edits.items()]
    handles = []
    try:
        for site, fn in sites:
            if not callable(fn):
                raise ComponentError(f"The edit for {site.name!r} must be a function of the activation; "
                                     f"got {type(fn).__name__}.")
            handles.append(_register(site, lm.n_heads, None, fn))
        yield
    finally:
        for h in handles:
            h.remove()
