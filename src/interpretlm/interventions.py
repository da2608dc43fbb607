"""Ready-made edits for :meth:`LM.intervene`: replace, add, scale and ablations.

Each function returns an edit ``fn(activation) -> activation``. ``heads=`` selects along
the head axis of ``attn.heads`` (``[batch, pos, head, d_head]``), ``neurons=`` the last
axis (``mlp.neurons``, or any ``d_model`` direction), ``positions=`` the position axis.
Unselected entries pass through untouched, so gradients flow through edits.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> with lm.intervene({"blocks.3.attn.heads": il.ablate.zero(heads=[2, 5]),  # doctest: +SKIP
    ...                    "blocks.7.mlp.neurons": il.ablate.mean(neurons=[10, 11])}):
    ...     lm.score("The capital of France is", " Paris")
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import ComponentError

Index = Sequence[int] | int | None


def _as_list(idx: Index) -> list[int] | None:
    if idx is None:
        return None
    return [int(idx)] if isinstance(idx, int) else [int(i) for i in idx]


def selection_mask(x: torch.Tensor, heads: Index = None, neurons: Index = None,
                   positions: Index = None) -> torch.Tensor:
    """Boolean mask broadcastable to ``x`` that is True on the selected entries.

    ``x`` is ``[batch, pos, ...]``; heads index axis 2 of a 4-d tensor, neurons the last
    axis, positions axis 1. Nothing selected on an axis means every index of it.
    """
    mask = torch.ones((1,) * x.dim(), dtype=torch.bool, device=x.device)

    def along(axis: int, idx: list[int], what: str) -> torch.Tensor:
        n = x.shape[axis]
        bad = [i for i in idx if not -n <= i < n]
        if bad:
            raise ComponentError(f"{what} index {bad[0]} is out of range: this activation has {n} "
                                 f"{what}s (0..{n - 1}).")
        m = torch.zeros(n, dtype=torch.bool, device=x.device)
        m[idx] = True
        shape = [1] * x.dim()
        shape[axis] = n
        return m.view(shape)

    h, n, p = _as_list(heads), _as_list(neurons), _as_list(positions)
    if h is not None:
        if x.dim() != 4:
            raise ComponentError("heads= only applies to 'blocks.{i}.attn.heads' "
                                 f"([batch, pos, head, d_head]); this activation has shape {tuple(x.shape)}.")
        mask = mask & along(2, h, "head")
    if n is not None:
        mask = mask & along(x.dim() - 1, n, "neuron")
    if p is not None:
        mask = mask & along(1, p, "position")
    return mask


def fitted(value: torch.Tensor | float, x: torch.Tensor, what: str) -> torch.Tensor:
    """``value`` as a tensor on ``x``'s device and dtype, checked to broadcast to ``x``'s shape.

    Raises:
        ComponentError: the shapes do not fit (the message gives the shapes that do).

    Example:
        >>> fitted(torch.ones(4), torch.zeros(2, 3, 4), "add").shape
        torch.Size([4])
        >>> fitted(torch.ones(5), torch.zeros(2, 3, 4), "add")
        Traceback (most recent call last):
        ...
        interpretlm.errors.ComponentError: add: the value has shape (5,), which does not fit the activation's shape (2, 3, 4) ([batch, pos, ...]). Give a number, a vector of its last size (4,) or a tensor of shape (2, 3, 4) (or broadcastable to it).
    """
    try:
        v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ComponentError(f"{what}: cannot make a tensor of {type(value).__name__} {value!r:.60}: {exc}") from exc
    try:
        fits = torch.broadcast_shapes(v.shape, x.shape) == x.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ComponentError(f"{what}: the value has shape {tuple(v.shape)}, which does not fit the activation's "
                             f"shape {tuple(x.shape)} ([batch, pos, ...]). Give a number, a vector of its last size "
                             f"({x.shape[-1]},) or a tensor of shape {tuple(x.shape)} (or broadcastable to it).")
    return v


def replace(value: torch.Tensor | float, *, heads: Index = None, neurons: Index = None,
            positions: Index = None):
    """Set the selected entries to ``value`` (a tensor broadcastable to the activation, or a number)."""
    def edit(x: torch.Tensor) -> torch.Tensor:
        v = fitted(value, x, "replace")
        return torch.where(selection_mask(x, heads, neurons, positions), v, x)
    return edit


def add(vector: torch.Tensor, *, scale: float = 1.0, positions: Index = None):
    """Add ``scale * vector`` (``[d]``, broadcast over batch and pos) at the chosen positions (steering)."""
    def edit(x: torch.Tensor) -> torch.Tensor:
        v = fitted(vector, x, "add")
        m = selection_mask(x, positions=positions)
        return x + scale * v * m
    return edit


def scale(factor: float, *, heads: Index = None, neurons: Index = None, positions: Index = None):
    """Multiply the selected entries by ``factor``."""
    def edit(x: torch.Tensor) -> torch.Tensor:
        m = selection_mask(x, heads, neurons, positions)
        return torch.where(m, x * factor, x)
    return edit


def zero(*, heads: Index = None, neurons: Index = None, positions: Index = None):
    """Zero-ablate the selected heads / neurons / positions."""
    return replace(0.0, heads=heads, neurons=neurons, positions=positions)


def mean(*, heads: Index = None, neurons: Index = None, positions: Index = None,
         reference: torch.Tensor | None = None, per_position: bool = False):
    """Mean-ablate: replace selected entries by their mean activation.

    Args:
        reference: activations ``[n, pos, ...]`` (e.g. captured on a reference dataset) to
            average; by default the current batch is averaged.
        per_position: average over examples only, keeping one mean per position
            (needs the same length as the reference); by default also over positions.
    """
    def edit(x: torch.Tensor) -> torch.Tensor:
        src = x.detach() if reference is None else reference.to(x.device, x.dtype)
        mu = src.mean(dim=0, keepdim=True) if per_position else src.mean(dim=(0, 1), keepdim=True)
        if per_position and mu.shape[1] != x.shape[1]:
            raise ComponentError(f"per_position mean has {mu.shape[1]} positions; the activation has {x.shape[1]}.")
        return torch.where(selection_mask(x, heads, neurons, positions), mu, x)
    return edit


def resample(*, heads: Index = None, neurons: Index = None, positions: Index = None,
             source: torch.Tensor | None = None, seed: int = 0):
    """Resample-ablate: replace selected entries by the activation of another input.

    Args:
        source: activations ``[n, pos, ...]`` from other inputs (same length); each row
            takes a random source row. By default rows of the current batch are shuffled
            (a derangement when the batch has more than one row).
        seed: makes the draw reproducible.
    """
    def edit(x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        b = x.shape[0]
        if source is None:
            if b < 2:
                raise ComponentError("Resample ablation without a source needs a batch of at least 2 "
                                     "inputs; pass source= activations of other inputs.")
            idx = (torch.arange(b) + torch.randint(1, b, (1,), generator=g)) % b
            src = x.detach()[idx]
        else:
            if source.shape[1:] != x.shape[1:]:
                raise ComponentError(f"Resample source has shape {tuple(source.shape)}; it must be "
                                     f"[n, {', '.join(map(str, x.shape[1:]))}].")
            idx = torch.randint(0, source.shape[0], (b,), generator=g)
            src = source.to(x.device, x.dtype)[idx]
        return torch.where(selection_mask(x, heads, neurons, positions), src, x)
    return edit
