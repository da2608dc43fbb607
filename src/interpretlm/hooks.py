"""Capture and intervene on canonical components with PyTorch forward hooks.

Both are context managers. Hooks are registered on the original Hugging Face modules
(nothing is replaced or monkey-patched) and are always removed on exit, also when the
body raises. Interventions are plain functions of the activation, so gradients flow
through them unless the function detaches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
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


def first_output(output: Any) -> torch.Tensor:
    """A module's main output: the first element when it returns a tuple (blocks, attention)."""
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


class StopForward(Exception):
    """Raised by a ``stop=True`` hook to skip the rest of a forward pass (baukit's ``stop``).

    :func:`hook` swallows it on exit of its ``with`` block, and :meth:`LM.run` catches it,
    so callers only meet it when they run the model themselves outside both.
    """


def _register(site: Site, n_heads: int, read: Callable[[torch.Tensor], None] | None,
              edit: Edit | None, *, grad: bool = False, stop: bool = False,
              call: Callable[[tuple, dict], None] | None = None) -> torch.utils.hooks.RemovableHandle:
    """One PyTorch hook on ``site`` that edits, makes a graph node of, reads and/or stops at its value.

    The only place in the library that registers hooks on canonical components: everything
    else goes through :func:`hook`. The hook acts only in the thread that registered it.
    """

    def apply(value: torch.Tensor) -> torch.Tensor:
        if edit is not None:
            new = edit(value)
            if new is not None:
                if not isinstance(new, torch.Tensor):
                    raise ComponentError(f"The intervention on {site.name!r} returned a {type(new).__name__}; "
                                         f"it must return a tensor of the activation's shape {tuple(value.shape)} "
                                         "(or None after editing in place).")
                if new.shape != value.shape:
                    raise ComponentError(
                        f"The intervention on {site.name!r} returned shape {tuple(new.shape)}; "
                        f"it must keep the activation's shape {tuple(value.shape)}.")
                value = new
        if grad and not value.requires_grad and torch.is_grad_enabled():
            # A graph node even when no weight or input needs grad, so that
            # torch.autograd.grad(score, value) works.
            value = value.detach().requires_grad_(True)
        if read is not None:
            read(value)
        return value

    changes = edit is not None or grad
    # PyTorch hooks are process-wide: act only on the forward passes of the thread that opened
    # the hook, so concurrent callers on one model never see (or edit) each other's activations.
    owner = threading.get_ident()
    if site.kind == "output":
        def hook_fn(module, args, output):
            if threading.get_ident() != owner:
                return None
            new = apply(first_output(output))
            if stop:
                raise StopForward
            return _with_first(output, new) if changes else None
        return site.module.register_forward_hook(hook_fn)
    if site.kind == "pattern":
        if changes:
            raise ComponentError(
                f"{site.name!r} can be captured but not edited: attention probabilities are "
                "computed inside a functional attention kernel. Edit 'attn.heads' instead.")

        def pattern_hook(module, args, output):
            if threading.get_ident() != owner:
                return None
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise ComponentError(
                    f"No attention weights came out of {site.name!r}: the model is not running "
                    "an attention implementation that returns them. Capture patterns through "
                    "lm.capture, or run inside lm.attention_weights().")
            apply(weights)
            if stop:
                raise StopForward
        return site.module.register_forward_hook(pattern_hook)
    if site.kind in ("input", "heads"):
        def pre_hook(module, args, kwargs):
            if threading.get_ident() != owner:
                return None
            x = _input_of(args, kwargs)
            if call is not None:
                call(tuple(args[1:]) if args else (), {k: v for k, v in kwargs.items() if k != "hidden_states"})
            if site.kind == "heads":
                v = _heads_view(x, n_heads)
                new = apply(v).reshape(x.shape)
            else:
                new = apply(x)
            if stop:
                raise StopForward
            if not changes:
                return None
            return _with_input(args, kwargs, new)
        return site.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    raise ComponentError(f"Unknown hook kind {site.kind!r} for {site.name!r}.")


@contextmanager
def hook(lm: "LM", name: str, *, read: Callable[[torch.Tensor], None] | None = None,
         edit: Edit | None = None, grad: bool = False, stop: bool = False,
         call: Callable[[tuple, dict], None] | None = None) -> Iterator[Site]:
    """Read, edit, take gradients of or stop at one canonical component during forward passes.

    The one primitive every component hook of the library is built on (``capture``,
    ``intervene``, ``LM.run(until=)``, ``LM.forward``'s last hidden state, replay
    recordings, LRP and attention patterns), in the spirit of baukit's ``Trace``. At each
    forward pass through the component, in this order: ``edit`` replaces the value,
    ``grad`` makes it a graph node, ``read`` sees the (edited) value, ``stop`` ends the
    forward pass. The hook is removed on exit, also when the body raises, and acts only on
    forward passes run by the thread that opened it (concurrent callers do not mix).

    Args:
        lm: the model handle.
        name: a canonical name (``"blocks.3.attn.heads"``); shapes as in :func:`capture`:
            ``[batch, pos, d_model]``, ``[batch, pos, head, d_head]`` for ``attn.heads``,
            ``[batch, head, query, key]`` for ``attn.pattern``.
        read: ``fn(value)`` called with the value (not detached: detach it to keep it
            without its graph).
        edit: ``fn(value) -> value`` of the same shape (or ``None`` after editing in place).
            Not allowed on ``attn.pattern``.
        grad: make the value a leaf that requires grad when nothing upstream does (inside
            ``torch.enable_grad()``), so ``torch.autograd.grad(score, value)`` works.
        stop: raise :class:`StopForward` right after this component (its output hooks
            registered earlier still run), so the layers above cost nothing; the ``with``
            block swallows it.
        call: for input sites (``blocks.{i}.resid_pre``, ``blocks.{i}.mlp.neurons``,
            ``blocks.{i}.attn.heads``): ``fn(args, kwargs)`` with the module's other call
            arguments (attention mask, rotary embeddings...), what a replay needs.

    Yields:
        the resolved :class:`~interpretlm.architectures.Site`.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> seen = []
        >>> with lm.hook("blocks.0.resid_post", read=seen.append, stop=True):
        ...     _ = lm.forward("When Mary and John")
        >>> seen[0].shape[-1] == lm.d_model
        True
    """
    site = lm.site(name)
    if call is not None and site.kind not in ("input", "heads"):
        raise ComponentError(f"call= reads a module's call arguments, so it needs an input component "
                             f"('blocks.{{i}}.resid_pre', 'mlp.neurons', 'attn.heads'); got {name!r}.")
    handle = _register(site, lm.n_heads, read, edit, grad=grad, stop=stop, call=call)
    try:
        yield site
    except StopForward:
        if not stop:
            raise
    finally:
        handle.remove()


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
    needs_weights = any(s.kind == "pattern" for s in sites)
    with ExitStack() as stack:
        for site in sites:
            # patterns come out of the attention kernel: they are read as they are, never made leaves
            keep_graph = grad and site.kind != "pattern"

            def read(value: torch.Tensor, _name: str = site.name) -> None:
                cache[_name] = value if grad else value.detach()
            stack.enter_context(hook(lm, site.name, read=read, grad=keep_graph))
        if needs_weights:
            stack.enter_context(lm.attention_weights())
        yield cache


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
    for site, fn in sites:
        if not callable(fn):
            raise ComponentError(f"The edit for {site.name!r} must be a function of the activation; "
                                 f"got {type(fn).__name__}.")
    with ExitStack() as stack:
        for site, fn in sites:
            stack.enter_context(hook(lm, site.name, edit=fn))
        yield
