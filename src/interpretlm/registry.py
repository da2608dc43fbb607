"""The method registry: every family declares its methods here, and everything else iterates it.

A method declares its verb and name, what it takes, its options (read from the function's
keyword arguments and their defaults), its result class, its check figure, its demo
section and its one-line summary. The top-level verbs (``il.attribute``, ``il.patch``...),
the command line, the demo, and later the web app and the engines are built from this
table; none of them names a family.

**The calling convention** (the same for every method, enforced here, not in each family):

* ``takes="prompt"``: one prompt, token ids or a :class:`~interpretlm.tokens.Batch` gives
  one result; a *list of prompts* (strings or token-id lists) gives a list of results, one
  per prompt, in order, with one progress bar over them.
* ``takes="item"``: one structured input (a dataclass with ``to_dict`` / ``from_dict``, such as
  ``il.reasoning.Question``; the method may also accept a plain string) gives one result; a
  list of them gives a list of results. ``il.rerun`` rebuilds the item from its recorded dict.
* ``takes="pairs"`` (clean / corrupted prompts), ``"dataset"`` (prompts), ``"task"`` (a
  labelled task) and ``"result"`` (a result to evaluate): the list *is* the data set, and
  the result aggregates it.
* ``takes="unit"``: an :class:`~interpretlm.units.Unit`, ``Unit.all(...)`` or a list of them
  (activation maximization); the result covers them all.
* Options are keyword arguments; an unknown name raises :class:`~interpretlm.errors.OptionError`
  listing the valid ones.
* Every warning is an :class:`~interpretlm.errors.InterpretLMWarning` and is recorded in
  ``result.warnings``; every result gets ``result.check`` (a failing check warns with a
  :class:`~interpretlm.errors.CheckWarning`) and its provenance, so ``il.rerun`` reproduces it.

Adding a family: write its package, decorate each public function with :func:`register`
and import nothing from here but :func:`register` and :class:`CheckSpec`. Packages of
``interpretlm`` are found by :func:`load_all`; third-party packages register through the
``interpretlm.methods`` entry point group.

Example:
    >>> import interpretlm as il
    >>> m = il.method("integrated_gradients")
    >>> m.verb, m.takes, m.check.name
    ('attribute', 'prompt', 'completeness_error')
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import CheckWarning, InterpretLMError, InterpretLMWarning, NonFiniteWarning, OptionError
from .results import Check, Result

TAKES = ("prompt", "item", "pairs", "dataset", "task", "result", "unit")
# Keywords the verbs themselves take (``il.attribute(..., method=)``, ``target=``, ``progress=``):
# an option of the same name would collide with them in the verb's call.
RESERVED_OPTIONS = ("method", "target", "progress")
REQUIRED = inspect.Parameter.empty  # the default of an option the caller must give


@dataclass(frozen=True)
class CheckSpec:
    """How a method's check figure is read from its result and judged.

    Attributes:
        name: the figure's name (by default also its key in ``result.diagnostics``).
        threshold: the limit (a maximum, or a minimum with ``higher_is_better``).
        read: ``fn(result) -> float | Check | None``; default reads ``result.diagnostics[name]``
            (a :class:`Check` returned by ``read`` is taken as it is, for figures whose name or
            threshold depend on the result).
        advice: what to do when the check fails (appended to the warning).
        threshold_of: ``fn(result) -> float`` when the threshold depends on the result
            (IG's ``tol`` option, LRP's ``tolerance``); it then replaces ``threshold``.
        name_of: ``fn(result) -> str`` when the figure's name depends on the result (LRP's
            published softmax rule names the share it absorbs); the spec's threshold still rules.
    """

    name: str
    threshold: float
    higher_is_better: bool = False
    read: Callable[[Result], float | None] | None = None
    advice: str = ""
    threshold_of: Callable[[Result], float] | None = None
    name_of: Callable[[Result], str] | None = None

    def evaluate(self, result: Result) -> Check:
        threshold = float(self.threshold_of(result)) if self.threshold_of is not None else self.threshold
        value = self.read(result) if self.read is not None else result.diagnostics.get(self.name)
        if isinstance(value, Check):  # the figure the result reports; the spec's threshold rules its own name
            return Check(value.name, value.value, threshold, self.higher_is_better) if value.name == self.name \
                else value
        if isinstance(value, torch.Tensor):
            value = float(value.abs().max()) if value.numel() else None
        value = None if value is None else float(value)
        name = self.name_of(result) if self.name_of is not None else self.name
        return Check(name, value, threshold, self.higher_is_better)


@dataclass(frozen=True)
class Option:
    """One keyword option of a method: its name, default and type (from the signature)."""

    name: str
    default: Any
    annotation: str


@dataclass(frozen=True)
class Method:
    """A registered method. See the module docstring for the fields' meaning."""

    name: str
    verb: str
    family: str
    takes: str
    impl: Callable[..., Any]
    result: type[Result]
    summary: str
    check: CheckSpec | None = None
    target: str = "required"  # "required", "optional" or "none"
    seeded: bool = False
    demo: Callable[..., Any] | None = None
    demo_order: int = 100
    options: dict[str, Option] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()  # names of the positional inputs after ``lm`` (before ``target``)
    cli_input: str | None = None  # "module:function" turning a command-line word into the input

    def line(self) -> str:
        """One line: verb, name, what it takes, its check."""
        chk = f"{self.check.name} {'>=' if self.check.higher_is_better else '<='} {self.check.threshold:g}" \
            if self.check else "-"
        return f"{self.verb:<18} {self.name:<22} {self.takes:<7} {chk:<34} {self.summary}"

    def __call__(self, lm: Any, *args: Any, **options: Any) -> Any:
        return call(self.name, lm, *args, **options)


class MethodTable(list):
    """``il.methods()``: the registered methods; prints one line each."""

    def __str__(self) -> str:
        head = f"{'verb':<18} {'method':<22} {'takes':<7} {'check':<34} summary"
        return "\n".join([head] + [m.line() for m in self])

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython
        p.text(str(self))

    def names(self) -> list[str]:
        return [m.name for m in self]


_METHODS: dict[str, Method] = {}
_VERBS: dict[str, Callable[..., Any]] = {}
_LOADED = False


class UnknownMethodError(InterpretLMError, ValueError):
    """A method name that is not registered."""


def _signature(impl: Callable[..., Any], inputs: Sequence[str] | None) -> tuple[tuple[str, ...], dict[str, Option]]:
    params = list(inspect.signature(impl).parameters.values())[1:]  # drop lm
    if inputs is None:
        inputs = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                       and p.default is inspect.Parameter.empty and p.name != "target")
    inputs = tuple(inputs)
    options = {}
    for p in params:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in inputs or p.name == "target":
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", str(p.annotation))
        options[p.name] = Option(p.name, p.default, ann)
    return inputs, options


def register(name: str, *, verb: str | None = None, family: str, takes: str, result: type[Result],
             summary: str, check: CheckSpec | None = None, target: str = "required", seeded: bool = False,
             demo: Callable[..., Any] | str | None = None, demo_order: int = 100,
             inputs: Sequence[str] | None = None,
             cli_input: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``impl(lm, *inputs, [target], **options)`` as method ``name``.

    Returns the public function (the convention of the module docstring applied around
    ``impl``), with ``impl``'s name, docstring and signature. ``verb`` defaults to ``name``;
    several methods may share a verb (``il.attribute(..., method=name)``). ``inputs`` names
    the positional inputs after ``lm`` (default: the positional parameters without a
    default, ``target`` excepted); ``demo`` is a section function or its
    ``"module:function"`` path, imported only when the demo runs; ``cli_input`` is the
    ``"module:function"`` path of ``fn(word, lm) -> input`` that the command line uses to
    build the input from a word (a built-in task or data set name, a file); for a
    ``takes="prompt"`` method it is ``fn(word, lm) -> {option: value}``, the options a leading
    word before the prompt stands for (``interpretlm influence train.jsonl "query"``).
    """
    if takes not in TAKES:
        raise ValueError(f"takes must be one of {TAKES}; got {takes!r}")

    def deco(impl: Callable[..., Any]) -> Callable[..., Any]:
        inputs_, options = _signature(impl, inputs)
        clash = [o for o in options if o in RESERVED_OPTIONS]
        if clash:
            raise OptionError(f"{name}: option {clash[0]!r} is a keyword of the verbs themselves "
                              f"({', '.join(RESERVED_OPTIONS)}); rename it (e.g. IG's quadrature rule is "
                              "'quadrature', not 'method').")
        m = Method(name=name, verb=verb or name, family=family, takes=takes, impl=impl, result=result,
                   summary=summary, check=check, target=target, seeded=seeded or "seed" in options, demo=demo,
                   demo_order=demo_order, options=options, inputs=inputs_, cli_input=cli_input)
        _METHODS[name] = m

        @functools.wraps(impl)
        def public(lm: Any, *args: Any, **kwargs: Any) -> Any:
            return call(name, lm, *args, **kwargs)
        public.method = m  # type: ignore[attr-defined]
        if m.verb == name:
            _VERBS[name] = public
        return public
    return deco


def register_verb(verb: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``fn`` the public function of ``verb`` (for verbs shared by several methods)."""
    _VERBS[verb] = fn
    return fn


def family_packages() -> list[str]:
    """The subpackages of interpretlm (each family is one; ``viz`` holds the renderers)."""
    import interpretlm

    return [info.name for info in pkgutil.iter_modules(interpretlm.__path__) if info.ispkg]


def load_all() -> None:
    """Import every method family of interpretlm and of installed plug-ins (once)."""
    global _LOADED
    if _LOADED:
        return
    for name in family_packages():
        importlib.import_module(f"interpretlm.{name}")
    from importlib.metadata import entry_points
    for ep in entry_points(group="interpretlm.methods"):
        ep.load()
    _LOADED = True


def methods(verb: str | None = None, takes: str | None = None) -> MethodTable:
    """Every registered method (of a verb, or taking a kind of input), one line each when printed.

    Example:
        >>> import interpretlm as il
        >>> "integrated_gradients" in il.methods("attribute").names()
        True
    """
    load_all()
    return MethodTable(m for m in _METHODS.values()
                       if (verb is None or m.verb == verb) and (takes is None or m.takes == takes))


def method(name: str) -> Method:
    """The registered :class:`Method` called ``name``."""
    if name not in _METHODS:
        load_all()
    if name not in _METHODS:
        raise UnknownMethodError(f"Unknown method {name!r}. Registered: {', '.join(sorted(_METHODS))}.")
    return _METHODS[name]


def verbs() -> dict[str, Callable[..., Any]]:
    """The public function of every verb (``{"attribute": il.attribute, ...}``)."""
    load_all()
    return dict(_VERBS)


# ------------------------------------------------------------------ the convention
def is_prompt_list(inputs: Any) -> bool:
    """Whether ``inputs`` is several prompts (strings or token-id lists), not one."""
    if isinstance(inputs, (list, tuple)) and inputs:
        first = inputs[0]
        return isinstance(first, str) or (isinstance(first, (list, tuple)) and all(isinstance(t, int) for t in first))
    return False


def check_options(m: Method, options: dict[str, Any]) -> None:
    """Raise :class:`OptionError` for option names ``m`` does not take."""
    unknown = [k for k in options if k not in m.options and k != "progress"]
    if unknown:
        valid = ", ".join(o.name if o.default is REQUIRED else f"{o.name}={o.default!r}" for o in m.options.values())
        raise OptionError(f"{m.name} takes no option {', '.join(map(repr, unknown))}. Its options: {valid or 'none'}.")
    missing = [o.name for o in m.options.values() if o.default is REQUIRED and o.name not in options]
    if missing:
        raise OptionError(f"{m.name} needs the option(s) {', '.join(missing)}.")


def call(name: str, lm: Any, *args: Any, **options: Any) -> Any:
    """Run method ``name`` following the convention; the body of every public verb."""
    m = method(name)
    n_in = len(m.inputs)
    inputs, rest = list(args[:n_in]), list(args[n_in:])
    if len(inputs) < n_in:
        params = inspect.signature(m.impl).parameters
        for k in m.inputs[len(inputs):]:
            if k in options:
                inputs.append(options.pop(k))
            elif params[k].default is not inspect.Parameter.empty:
                inputs.append(params[k].default)
            else:
                raise OptionError(f"{m.name} needs {', '.join(m.inputs)}; {k} is missing.")
    if len(rest) > 1:
        raise OptionError(f"{m.name} takes {', '.join(m.inputs)} and a target as positional arguments; "
                          "give its options by name.")
    target = rest[0] if rest else options.pop("target", None)
    check_options(m, options)
    policy = options.pop("progress", None)  # applied to every loop inside through progress.policy
    if m.target == "required" and target is None:
        raise OptionError(f"{m.name} needs a target (il.NextToken(' Mary'), il.Contrast(...), ...).")
    from .progress import policy as progress_policy, track

    with progress_policy(policy):
        if m.takes == "prompt" and is_prompt_list(inputs[0]):
            return [_call_one(m, lm, [one] + inputs[1:], target, options) for one in track(inputs[0], m.name)]
        if m.takes == "item" and isinstance(inputs[0], (list, tuple)):
            return [_call_one(m, lm, [one] + inputs[1:], target, options) for one in track(list(inputs[0]), m.name)]
        return _call_one(m, lm, inputs, target, options)


def _call_one(m: Method, lm: Any, inputs: list[Any], target: Any, options: dict[str, Any]) -> Any:
    from .targets import as_target

    tgt = as_target(target) if target is not None else None
    kwargs = dict(options)
    if m.target != "none":
        kwargs["target"] = tgt
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = m.impl(lm, *inputs, **kwargs)
    if isinstance(result, Result):
        record(m, result, lm, inputs, tgt, options)
    for w in caught:  # emitted once more, now that they are recorded
        cat = w.category if issubclass(w.category, Warning) else UserWarning
        if isinstance(result, Result) and not any(r["message"] == str(w.message) for r in result.warnings):
            result.warnings.append({"category": cat.__name__, "message": str(w.message)})
        warnings.warn_explicit(w.message, cat, w.filename, w.lineno)
    if isinstance(result, Result):
        _judge(m, result)
    return result


def _plain_inputs(value: Any) -> Any:
    from .tokens import Batch

    if isinstance(value, Batch):
        return [[int(t) for t in row[: int(n)]] for row, n in zip(value.input_ids.tolist(),
                                                                 value.attention_mask.sum(1).tolist())]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_inputs(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain_inputs(v) for k, v in value.items()}
    cls = f"{type(value).__module__}.{type(value).__qualname__}"
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return {"__class__": cls, **to_dict()}
    if dataclasses.is_dataclass(value):
        return {"__class__": cls, **{f.name: _plain_inputs(getattr(value, f.name))
                                     for f in dataclasses.fields(value) if f.init}}
    return repr(value)


def record(m: Method, result: Result, lm: Any, inputs: list[Any], target: Any, options: dict[str, Any]) -> None:
    """Fill the provenance every result carries (method, options, inputs, target, model, version)."""
    from . import __version__

    result.method = m.name
    full = {k: o.default for k, o in m.options.items()}
    full.update({k: v for k, v in options.items() if k != "progress"})
    result.options = {k: _plain_inputs(v) for k, v in full.items()}
    result.inputs = _plain_inputs(inputs[0] if len(inputs) == 1 else inputs)
    if target is not None and not result.target:
        result.target = target.to_dict()
    if not result.input_ids and m.takes == "prompt" and hasattr(lm, "tokenize"):
        result.input_ids = lm.tokenize(inputs[0], chat=bool(options.get("chat", False))).input_ids[0].tolist()
    if hasattr(lm, "name"):
        result.model = result.model or lm.name
    if hasattr(lm, "fingerprint"):
        result.model_fingerprint = lm.fingerprint
    result.version = __version__


def _judge(m: Method, result: Result) -> None:
    bad = result.nonfinite()
    if m.check is None and not bad:
        return
    result.check = m.check.evaluate(result) if m.check is not None else Check("finite", None, 0.0)
    if bad:
        # A NaN or inf anywhere in the result fails its check (value nan, or inf when that is all there is),
        # whatever the figure said: the numbers it was computed from cannot be trusted.
        value = float("inf") if all("inf" in d and "nan" not in d for _, d in bad) else float("nan")
        result.check = Check(result.check.name, value, result.check.threshold, result.check.higher_is_better)
        where = "; ".join(d if d.startswith(("nan at", "inf at", "-inf at")) else f"{p} = {d}" for p, d in bad[:4])
        more = f" (and {len(bad) - 4} more fields)" if len(bad) > 4 else ""
        result.warn(f"{m.name}: non-finite values in the result: {where}{more}. Its check {result.check.name} "
                    "fails. An intervention (lm.intervene) or an overflowing dtype put NaN/inf into the model.",
                    NonFiniteWarning, stacklevel=4)
        return
    if m.check is None:
        return
    already = any(issubclass(_category(w["category"]), CheckWarning) for w in result.warnings)
    if result.check.passed is False and not already:
        result.warn(f"{m.name}: {result.check}. {m.check.advice}".strip(), CheckWarning, stacklevel=4)


def _category(name: str) -> type[Warning]:
    def walk(cls: type) -> list[type]:
        return [cls] + [c for sub in cls.__subclasses__() for c in walk(sub)]
    for cls in walk(InterpretLMWarning):
        if cls.__name__ == name:
            return cls
    return UserWarning


def rerun(result: Result, lm: Any, **overrides: Any) -> Result:
    """Run the method that made ``result`` again, with the same inputs, target and options.

    Prompt methods rerun on the recorded token ids, so the tokenization (BOS, chat
    template) is the one recorded. Raises if ``lm``'s weights differ from the recorded
    fingerprint (pass ``check_model=False`` to rerun on another model on purpose).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> a = il.attribute(lm, "a b c", il.NextToken(5), method="saliency")
        >>> bool((il.rerun(a, lm).scores == a.scores).all())
        True
    """
    from .targets import Target

    check_model = overrides.pop("check_model", True)
    if check_model and result.model_fingerprint and getattr(lm, "fingerprint", None) != result.model_fingerprint:
        raise InterpretLMError(f"{result.method} was computed on weights {result.model_fingerprint[:12]}, "
                               f"not those of {lm.name!r}; pass check_model=False to rerun on this model anyway.")
    m = method(result.method)
    options = {k: v for k, v in result.options.items() if k in m.options}
    options.update(overrides)
    raw = result.inputs
    if m.takes == "prompt" and result.input_ids:
        inputs = [torch.tensor(result.input_ids)]
        if "chat" in m.options:  # the recorded ids already hold the chat template
            options["chat"] = False
    else:
        inputs = _rebuild_inputs(raw, len(m.inputs))
    target = Target.from_dict(result.target) if (result.target and m.target != "none") else None
    args = inputs + ([target] if m.target != "none" else [])
    return call(m.name, lm, *args, **options)


def _rebuild_inputs(raw: Any, n: int) -> list[Any]:
    def rebuild(v: Any) -> Any:
        if isinstance(v, list):
            return [rebuild(x) for x in v]
        if isinstance(v, dict) and "__class__" in v:
            module, _, qual = v["__class__"].rpartition(".")
            cls = getattr(importlib.import_module(module), qual)
            if hasattr(cls, "from_dict"):
                return cls.from_dict({k: x for k, x in v.items() if k != "__class__"})
            return cls(**{k: rebuild(x) for k, x in v.items() if k != "__class__"})
        return v
    values = [raw] if n == 1 else list(raw)
    return [rebuild(v) for v in values]
