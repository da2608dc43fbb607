"""Units: one scalar per token read from a component (a neuron, a head's output norm, a direction).

A :class:`Unit` names what activation maximization (and later dictionary features) looks at:

* ``Unit("blocks.12.mlp.neurons", 417)``: one MLP neuron (the input of the output projection);
* ``Unit("blocks.3.attn.heads", 2)``: head 2's output norm (the norm of what it writes to the
  residual stream through the output projection); with ``direction=`` of size ``d_head`` the
  projection of its per-head value, of size ``d_model`` the projection of its write;
* ``Unit("blocks.5.resid_post", direction=v)``: a direction of a ``[batch, pos, d_model]``
  component (a probe's weight vector, any vector); ``Unit("blocks.5.resid_post", 7)`` its
  7th basis direction;
* ``Unit.all("blocks.12.mlp.neurons")`` / ``Unit.all("mlp.neurons")``: every unit of a component
  (of every layer), read in one pass by :func:`unit_values`;
* ``Unit(sae, 1234)``: feature 1234 of a sparse dictionary (``il.features``): any object with
  ``component``, ``n_features``, ``encode([..., d] -> [..., n_features])``, ``check_model(lm)``,
  ``direction(i)`` and ``to_dict`` / ``from_dict``; its value is the feature's activation, read at
  the component the dictionary reads (a transcoder's: ``blocks.{i}.mlp.input``);
  ``Unit.all(sae)`` is every feature of it.

Units are plain data (``to_dict`` / ``from_dict``), so results that hold them rerun.

Example:
    >>> import interpretlm as il
    >>> from interpretlm.testing import tiny_lm
    >>> lm = tiny_lm("llama")
    >>> u = il.Unit("blocks.1.mlp.neurons", 3)
    >>> u.name, u.bind(lm).size
    ('blocks.1.mlp.neurons[3]', 1)
    >>> il.Unit.all("mlp.neurons").bind(lm).size == lm.n_layers * lm.d_mlp
    True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import ComponentError

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
# components whose activation is one vector per token (a unit is an index or a direction of it)
_VECTOR_KINDS = ("resid_pre", "resid_post", "attn", "mlp", "mlp.neurons", "mlp.input")


def _as_vector(direction: Any) -> torch.Tensor:
    v = torch.as_tensor(direction.detach().cpu() if isinstance(direction, torch.Tensor) else direction,
                        dtype=torch.float32).flatten()
    if v.numel() == 0 or not torch.isfinite(v).all():
        raise ComponentError("A unit's direction must be a non-empty vector of finite numbers.")
    return v


@dataclass(frozen=True, eq=False)
class Unit:
    """One unit of a component: an index (neuron, head, basis direction) or a direction.

    Attributes:
        component: a canonical name (``"blocks.12.mlp.neurons"``, ``"blocks.3.attn.heads"``,
            ``"blocks.5.resid_post"``, ``"embed"``).
        index: the neuron / head / basis index (``None`` with a bare direction).
        direction: ``[d]`` a vector to project on (``None`` for an index unit).
        dictionary: the sparse dictionary of a feature unit (``Unit(sae, i)``; ``component`` is then
            the component the dictionary reads), ``None`` otherwise.
    """

    component: str
    index: int | None = None
    direction: torch.Tensor | None = field(default=None, repr=False)
    dictionary: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.component, str) and _is_dictionary(self.component):
            object.__setattr__(self, "dictionary", self.component)
            object.__setattr__(self, "component", self.component.component)
        if self.dictionary is not None:
            if self.direction is not None or self.index is None:
                raise ComponentError("A feature unit is Unit(dictionary, index): one feature's index, no direction.")
        if not isinstance(self.component, str) or not self.component:
            raise ComponentError(f"A unit's component is a canonical name such as 'blocks.12.mlp.neurons'; "
                                 f"got {self.component!r}.")
        if self.index is not None and (isinstance(self.index, bool) or not isinstance(self.index, int)):
            raise ComponentError(f"A unit's index is an int; got {self.index!r}.")
        if self.direction is not None:
            object.__setattr__(self, "direction", _as_vector(self.direction))
        if self.index is None and self.direction is None:
            raise ComponentError(f"Unit({self.component!r}) needs an index or a direction; "
                                 f"use Unit.all({self.component!r}) for every unit of it.")

    @property
    def name(self) -> str:
        """``"blocks.12.mlp.neurons[417]"``, ``"blocks.3.attn.heads[2]"``, ``"blocks.5.resid_post·dir"``."""
        tail = f"[{self.index}]" if self.index is not None else ""
        if self.dictionary is not None:
            return f"{self.component}:{self.dictionary.name}{tail}"
        return self.component + tail + ("·dir" if self.direction is not None else "")

    def __repr__(self) -> str:
        d = f", direction=[{self.direction.numel()}]" if self.direction is not None else ""
        if self.dictionary is not None:
            return f"Unit({self.dictionary!r}, {self.index!r})"
        return f"Unit({self.component!r}, {self.index!r}{d})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Unit):
            return NotImplemented
        same_dir = (self.direction is None and other.direction is None) or (
            self.direction is not None and other.direction is not None
            and self.direction.shape == other.direction.shape and bool((self.direction == other.direction).all()))
        same_dict = (self.dictionary is None) == (other.dictionary is None) and (
            self.dictionary is None or self.dictionary is other.dictionary or self.dictionary == other.dictionary)
        return self.component == other.component and self.index == other.index and same_dir and same_dict

    def __hash__(self) -> int:
        return hash((self.component, self.index))

    @staticmethod
    def all(component: Any, layers: Any = "all") -> "Units":
        """Every unit of ``component`` (``"blocks.12.mlp.neurons"``), or of a block kind
        (``"mlp.neurons"``, ``"attn.heads"``) in every layer (or ``layers``); or every feature of a
        sparse dictionary (``Unit.all(sae)``)."""
        if not isinstance(component, str) and _is_dictionary(component):
            return Units(component.component, dictionary=component)
        return Units(component, layers=layers)

    def bind(self, lm: Any) -> "BoundUnits":
        """Check the unit against ``lm`` and return it as :class:`BoundUnits` (one column)."""
        return BoundUnits.build(lm, [self])

    def to_dict(self) -> dict[str, Any]:
        out = {"component": self.component, "index": self.index,
               "direction": None if self.direction is None else self.direction.tolist()}
        if self.dictionary is not None:
            cls = type(self.dictionary)
            out["dictionary"] = {"__class__": f"{cls.__module__}.{cls.__qualname__}", **self.dictionary.to_dict()}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Unit":
        if d.get("dictionary"):
            import importlib

            # the dictionary's class is recorded by name (the core names no method package)
            spec = dict(d["dictionary"])
            module, _, qual = spec.pop("__class__").rpartition(".")
            return cls(getattr(importlib.import_module(module), qual).from_dict(spec), d.get("index"))
        return cls(d["component"], d.get("index"), d.get("direction"))


def _is_dictionary(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("component", "n_features", "encode", "check_model", "direction"))


def parse_unit(text: str) -> "Unit | Units":
    """A unit from its text form, as the command line and the app take it.

    ``"COMPONENT INDEX"`` is one unit, ``"COMPONENT all"`` every unit of the component.

    Example:
        >>> parse_unit("blocks.12.mlp.neurons 417")
        Unit('blocks.12.mlp.neurons', 417)
        >>> parse_unit("mlp.neurons all").name
        'all mlp.neurons'
    """
    words = str(text).split()
    if len(words) != 2 or not (words[1].isdigit() or words[1] == "all"):
        raise ComponentError(f"A unit is COMPONENT INDEX (e.g. 'blocks.12.mlp.neurons 417') or COMPONENT all; "
                             f"got {text!r}.")
    return Unit.all(words[0]) if words[1] == "all" else Unit(words[0], int(words[1]))


@dataclass(frozen=True)
class Units:
    """Every unit of a component (or of a block kind over layers), resolved against a model by :meth:`bind`."""

    component: str
    layers: Any = "all"
    dictionary: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"all {self.component}" + (f":{self.dictionary.name}" if self.dictionary is not None else "")

    def bind(self, lm: Any) -> "BoundUnits":
        """Every unit as :class:`BoundUnits` for ``lm``."""
        if self.dictionary is not None:
            return BoundUnits.build(lm, [Unit(self.dictionary, i) for i in range(self.dictionary.n_features)])
        if self.component in lm.component_names():
            comps = [self.component]
        elif f"blocks.0.{self.component}" in lm.component_names():
            comps = [f"blocks.{i}.{self.component}" for i in lm.indices(
                None if self.layers == "all" else self.layers)]
        else:
            raise ComponentError(f"Unknown component {self.component!r}: give a canonical name such as "
                                 "'blocks.0.mlp.neurons' or a block kind ('mlp.neurons', 'attn.heads', "
                                 "'resid_post'); see lm.component_names().")
        units = [Unit(c, i) for c in comps for i in range(component_size(lm, c))]
        return BoundUnits.build(lm, units)

    def to_dict(self) -> dict[str, Any]:
        if self.dictionary is not None:
            return {"component": self.component, "layers": self.layers,
                    "dictionary": Unit(self.dictionary, 0).to_dict()["dictionary"]}
        return {"component": self.component, "layers": self.layers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Units":
        if d.get("dictionary"):
            return Unit.all(Unit.from_dict({"component": d["component"], "index": 0,
                                             "dictionary": d["dictionary"]}).dictionary)
        return cls(d["component"], d.get("layers", "all"))


def component_size(lm: Any, component: str) -> int:
    """How many index units ``component`` has: ``d_mlp`` neurons, ``n_heads`` heads, ``d_model`` dims.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> component_size(lm, "blocks.0.attn.heads") == lm.n_heads
        True
    """
    kind = kind_of(lm, component)
    return {"mlp.neurons": lm.d_mlp, "attn.heads": lm.n_heads}.get(kind, lm.d_model)


def kind_of(lm: Any, component: str) -> str:
    """The block kind of a canonical name (``"mlp.neurons"``), ``"embed"``, or an error for others.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> kind_of(tiny_lm("llama"), "blocks.1.mlp.neurons")
        'mlp.neurons'
    """
    if component not in lm.component_names():
        raise ComponentError(f"Unknown component {component!r}; see lm.component_names() "
                             "(e.g. 'blocks.0.mlp.neurons', 'blocks.0.attn.heads', 'blocks.0.resid_post').")
    m = _BLOCK.match(component)
    kind = m.group(2) if m else component
    if kind not in _VECTOR_KINDS + ("attn.heads", "embed"):
        raise ComponentError(f"{component!r} is not one vector per token, so it has no units; use "
                             "mlp.neurons, attn.heads, resid_pre/resid_post, attn, mlp or embed.")
    return kind


def layer_of(component: str) -> int:
    """The block index of a canonical name (``-1`` for ``embed``).

    Example:
        >>> layer_of("blocks.12.mlp.neurons"), layer_of("embed")
        (12, -1)
    """
    m = _BLOCK.match(component)
    return int(m.group(1)) if m else -1


@dataclass
class _Group:
    """Units of one component read the same way: ``index`` columns, head ``norm``s, or ``dir``ections."""

    component: str
    how: str                     # "index", "norm" (heads), "dir" (directions), "head_dir" (per-head values)
    columns: list[int]           # positions of these units in the BoundUnits order
    index: torch.Tensor          # [n] neuron / head / basis indices (heads of head directions); features
    directions: torch.Tensor | None = None   # [n, d]
    dictionary: Any = None       # the dictionary of "feature" groups


@dataclass
class BoundUnits:
    """Units checked against a model, grouped by component so a pass reads each group at once.

    Attributes:
        units: the units, in order (column ``j`` of :func:`unit_values` is ``units[j]``).
        groups: per component and reading, the columns it fills.
    """

    units: list[Unit]
    groups: list[_Group]

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def components(self) -> list[str]:
        return list(dict.fromkeys(g.component for g in self.groups))

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.units]

    def subset(self, component: str) -> tuple["BoundUnits", torch.Tensor]:
        """The units of one component as their own :class:`BoundUnits` (columns ``0..n-1``) and
        ``[n]`` their columns here (a pass reads each component in its own hook)."""
        cols: list[int] = []
        groups = []
        for g in self.groups:
            if g.component == component:
                local = list(range(len(cols), len(cols) + len(g.columns)))
                cols += g.columns
                groups.append(_Group(g.component, g.how, local, g.index, g.directions, g.dictionary))
        return BoundUnits([self.units[j] for j in cols], groups), torch.tensor(cols, dtype=torch.long)

    @classmethod
    def build(cls, lm: Any, units: Sequence[Unit]) -> "BoundUnits":
        if not units:
            raise ComponentError("No units were given: pass il.Unit(...) or il.Unit.all(...).")
        keyed: dict[tuple[str, str, int], _Group] = {}
        kinds: dict[str, tuple[str, int]] = {}   # per component, once (Unit.all gives thousands of units)
        checked: set[int] = set()
        for j, u in enumerate(units):
            if u.dictionary is not None:
                if id(u.dictionary) not in checked:
                    u.dictionary.check_model(lm)   # width and component against the model: its own clear error
                    if u.dictionary.component not in lm.component_names():
                        raise ComponentError(f"{u.name}: the dictionary reads {u.dictionary.component!r}, which "
                                             "is not a component of this model; see lm.component_names().")
                    checked.add(id(u.dictionary))
                u.dictionary.feature_index(u.index)
                g = keyed.setdefault((u.component, "feature", id(u.dictionary)),
                                     _Group(u.component, "feature", [], torch.zeros(0, dtype=torch.long),
                                            dictionary=u.dictionary))
                g.columns.append(j)
                continue
            if u.component not in kinds:
                kinds[u.component] = (kind_of(lm, u.component), component_size(lm, u.component))
            kind, size = kinds[u.component]
            if u.index is not None and not 0 <= u.index < size:
                what = {"mlp.neurons": "neurons", "attn.heads": "heads"}.get(kind, "dimensions")
                raise ComponentError(f"{u.name}: index {u.index} is out of range; {u.component} has {size} {what} "
                                     f"(0..{size - 1}).")
            if kind == "attn.heads":
                if u.index is None:
                    raise ComponentError(f"{u.name}: a head unit needs the head's index (and optionally a direction).")
                if u.direction is None:
                    how, dim = "norm", 0
                elif u.direction.numel() in (lm.d_head, lm.d_model):
                    how, dim = "head_dir", u.direction.numel()
                else:
                    raise ComponentError(f"{u.name}: a head direction has d_head={lm.d_head} (its value) or "
                                         f"d_model={lm.d_model} (its write) entries; got {u.direction.numel()}.")
            elif u.direction is not None:
                d = lm.d_mlp if kind == "mlp.neurons" else lm.d_model
                if u.direction.numel() != d:
                    raise ComponentError(f"{u.name}: the direction has {u.direction.numel()} entries; "
                                         f"{u.component} has {d}.")
                how, dim = "dir", d
            else:
                how, dim = "index", 0
            g = keyed.setdefault((u.component, how, dim), _Group(u.component, how, [], torch.zeros(0, dtype=torch.long)))
            g.columns.append(j)
        groups = []
        for (comp, how, _), g in keyed.items():
            us = [units[j] for j in g.columns]
            g.index = torch.tensor([u.index if u.index is not None else 0 for u in us], dtype=torch.long)
            if how in ("dir", "head_dir"):
                g.directions = torch.stack([u.direction for u in us])
            groups.append(g)
        return cls(list(units), groups)


def bind_units(lm: Any, units: "Unit | Units | Sequence[Unit | Units] | BoundUnits") -> BoundUnits:
    """Units of any accepted form (a unit, ``Unit.all``, a list of them) bound to ``lm``.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> b = bind_units(lm, [Unit("blocks.0.attn.heads", 1), Unit.all("blocks.1.mlp.neurons")])
        >>> b.size == 1 + lm.d_mlp, b.components
        (True, ['blocks.0.attn.heads', 'blocks.1.mlp.neurons'])
    """
    if isinstance(units, BoundUnits):
        return units
    if isinstance(units, Units):
        return units.bind(lm)   # bound once (every neuron of every layer: 46,080 units), not bound then rebuilt
    if isinstance(units, Unit):
        units = [units]
    if not isinstance(units, (list, tuple)):
        raise ComponentError(f"Expected il.Unit(...), il.Unit.all(...) or a list of them; got {type(units).__name__}.")
    flat: list[Unit] = []
    for u in units:
        if isinstance(u, Units):
            flat += u.bind(lm).units
        elif isinstance(u, Unit):
            flat.append(u)
        else:
            raise ComponentError(f"Expected il.Unit(...) or il.Unit.all(...); got {u!r:.60}.")
    return BoundUnits.build(lm, flat)


def head_writes(lm: Any, layer: int, heads: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``[n, batch, pos, d_model]``: what heads ``index`` write through the output projection (bias removed).

    Differentiable (unlike ``lm.head_writes``), so optimized inputs can follow a head's output norm.
    ``heads`` is ``[batch, pos, head, d_head]``; ``index`` ``[n]`` the heads.

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> z = torch.randn(1, 3, lm.n_heads, lm.d_head)
        >>> w = head_writes(lm, 0, z, torch.tensor([1]))
        >>> w.shape == (1, 1, 3, lm.d_model), torch.allclose(w[0], lm.head_writes(0, z)[1], atol=1e-6)
        (True, True)
    """
    # The projection's weight, not a call of the module: a head hook is a pre-hook of that very module.
    proj = lm.site(f"blocks.{layer}.attn").module
    b, p, H, dh = heads.shape
    # nn.Linear stores [d_model, H*dh]; GPT-2's Conv1D stores [H*dh, d_model] (the same shape when square)
    w = proj.weight if type(proj).__name__ == "Conv1D" else proj.weight.T
    w_h = w.reshape(H, dh, -1)[index.to(w.device)].to(heads.dtype)  # [n, d_head, d_model]
    return torch.einsum("bpnd,ndm->nbpm", heads[:, :, index.to(heads.device)], w_h).float()


def unit_values(lm: Any, bound: BoundUnits, cache: Any) -> torch.Tensor:
    """``[batch, pos, n_units]`` the units' values from captured components.

    Args:
        lm: the model handle (head writes need its output projections).
        bound: the units (:func:`bind_units`).
        cache: ``{component: tensor}`` as captured by ``lm.capture(bound.components)``
            (``[batch, pos, d]``, heads ``[batch, pos, head, d_head]``).

    Differentiable when the cache holds graph tensors (``lm.capture(..., grad=True)``).

    Example:
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> b = bind_units(lm, Unit("blocks.1.mlp.neurons", 3))
        >>> with lm.capture(b.components) as cache:
        ...     _ = lm.run("a b c")
        >>> v = unit_values(lm, b, cache)
        >>> bool(torch.equal(v[..., 0], cache["blocks.1.mlp.neurons"][..., 3].float()))
        True
    """
    parts: list[tuple[list[int], torch.Tensor]] = []
    for g in bound.groups:
        x = cache[g.component].float()
        if g.how == "index":
            full = len(g.index) == x.shape[-1] and bool((g.index == torch.arange(x.shape[-1])).all())
            vals = x if full else x[..., g.index.to(x.device)]   # every unit of the component: no copy
        elif g.how == "dir":
            vals = x @ g.directions.to(x.device).T
        elif g.how == "feature":
            flat = x.reshape(*x.shape[:2], -1) if x.ndim == 4 else x     # attn.heads: [b, pos, head * d_head]
            vals = g.dictionary.encode(flat)[..., g.index.to(x.device)]
        else:  # heads
            if g.how == "head_dir" and g.directions.shape[1] == x.shape[-1]:   # per-head value directions
                vals = (x[:, :, g.index.to(x.device)] * g.directions.to(x.device)).sum(-1)
            else:
                w = head_writes(lm, layer_of(g.component), x, g.index)                 # [n, b, pos, d_model]
                if g.how == "norm":
                    vals = w.norm(dim=-1).permute(1, 2, 0)
                else:
                    vals = torch.einsum("nbpd,nd->bpn", w, g.directions.to(w.device))
        parts.append((g.columns, vals))
    if len(parts) == 1 and parts[0][0] == list(range(bound.size)):
        return parts[0][1]
    first = parts[0][1]
    out = first.new_zeros(first.shape[0], first.shape[1], bound.size)
    for cols, vals in parts:
        out[..., torch.tensor(cols, device=out.device)] = vals
    return out


__all__ = ["BoundUnits", "Unit", "Units", "bind_units", "component_size", "head_writes", "kind_of", "unit_values"]
