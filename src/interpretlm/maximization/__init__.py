"""Activation maximization: what makes a unit fire, from a real corpus and by optimization.

* :func:`corpus` — the built-in corpus (1.02M tokens of the King James Bible, Debian's
  ``bible-kjv-text``) and user corpora streamed from files or datasets on disk;
* ``il.maximize(lm, units, corpus=..., method="mine")`` — top-k windows, quantile samples,
  histograms, dead / rare units and gate × up sign splits for any number of units in one
  streaming, resumable pass;
* ``method="epo"`` (evolutionary prompt optimization with a fluency penalty per member, the
  Pareto front of activation against cross-entropy), ``"gcg"`` and ``"continuous"``.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> top = il.maximize(lm, il.Unit("blocks.12.mlp.neurons", 417), corpus=il.corpus("builtin"), k=20)  # doctest: +SKIP
    >>> top.save_html("unit.html")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import Any

from ..jobs import register_kind
from ..registry import call, method as get_method, register_verb
from .corpus import Corpus, CorpusError, corpus
from .mine import mine
from .mining import GLU_COMBOS, MiningError
from .result import MinedExamples, OptimizedInputs
from .sharded import MineJob
from . import optimize  # noqa: F401  (registers epo, gcg, continuous)


def maximize(lm: Any, units: Any, method: str = "mine", **options: Any) -> Any:
    """What makes ``units`` fire: mined corpus windows (``method="mine"``) or optimized inputs
    (``"epo"``, ``"gcg"``, ``"continuous"``).

    Args:
        lm: the model handle.
        units: ``il.Unit(...)``, ``il.Unit.all(...)`` or a list of them (optimization takes one unit).
        method: ``"mine"`` (default), ``"epo"``, ``"gcg"`` or ``"continuous"``.
        options: the method's options (``corpus=``, ``k=``, ``steps=``, ``seed=``...); an unknown
            name raises :class:`~interpretlm.errors.OptionError` listing the valid ones.

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> lm = tiny_lm("llama")
        >>> r = il.maximize(lm, il.Unit("blocks.1.mlp.neurons", 3), method="gcg", length=4, steps=3, seed=0)
        >>> len(r.pareto) >= 1
        True
    """
    m = get_method(method)
    if m.verb != "maximize":
        from ..errors import OptionError
        raise OptionError(f"{method!r} is not a method of maximize; choose mine, epo, gcg or continuous.")
    return call(method, lm, units, **options)


register_verb("maximize", maximize)
# il.maximize(..., engine=) runs method="mine" as a sharded job kind (sharded.py) on the local engine or Ray
functools.update_wrapper(MineJob.local, maximize)
MINE = register_kind(MineJob())

__all__ = ["Corpus", "CorpusError", "GLU_COMBOS", "MinedExamples", "MiningError", "OptimizedInputs", "corpus",
           "maximize", "mine"]
