"""Linear probing and probing tasks.

* :func:`activations` — batched extraction of any canonical component (token level or
  pooled) into memory or a resumable on-disk store of shards with a manifest;
* :func:`probe` — a probe per layer (logistic, ridge, MLP; the structural distance probe
  for parse trees) with a held-out split, control task and selectivity, MDL online code;
* :mod:`tasks` — part of speech, dependency relation, tree depth, parse trees (spaCy),
  sentiment, number agreement, IOI name position (templates) and user JSONL tasks.

Example:
    >>> import interpretlm as il  # doctest: +SKIP
    >>> lm = il.load()  # doctest: +SKIP
    >>> task = il.probing.tasks.pos()  # doctest: +SKIP
    >>> rep = il.probe(lm, task, layers="all", probe="logistic", control=True, mdl=True)  # doctest: +SKIP
    >>> rep.table; rep.save_html("pos.html")  # doctest: +SKIP
"""

from . import tasks
from .alignment import align_words
from .control import control_labels, selectivity
from .errors import ProbingError, StoreError, TaskError
from .mdl import online_codelength
from .probes import LogisticProbe, MLPProbe, RidgeProbe, accuracy, macro_f1, r2
from .report import ProbeReport, Table
from .run import probe
from .store import ActivationStore, activations, expand_components
from .structural import DistanceProbe, spearman, tree_distances
from .tasks import Task

__all__ = ["ActivationStore", "DistanceProbe", "LogisticProbe", "MLPProbe", "ProbeReport", "ProbingError",
           "RidgeProbe", "StoreError", "Table", "Task", "TaskError", "accuracy", "activations", "align_words",
           "control_labels", "expand_components", "macro_f1", "online_codelength", "probe", "r2", "selectivity",
           "spearman", "tasks", "tree_distances"]
