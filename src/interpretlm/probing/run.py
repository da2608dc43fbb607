"""``il.probe``: train a probe per layer on a task, with control task, MDL and structural probe."""

from __future__ import annotations

import math
import os
import random
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..progress import track
from ..registry import CheckSpec, register
from ..errors import CheckWarning
from ..results import Check
from .alignment import WHICH, align_words
from .control import control_labels, selectivity
from .errors import ProbingError, TaskError
from .mdl import online_codelength
from .probes import _Probe, accuracy, clone, macro_f1, make_probe, one_thread, r2
from .report import ProbeReport
from .store import activations, expand_components
from .structural import DistanceProbe, tree_distances
from .tasks.base import Task

METRICS = ("accuracy", "macro_f1", "r2", "control_accuracy", "control_r2", "selectivity", "mdl_codelength", "mdl_compression",
           "spearman", "uuas", "train_score")


def _split_groups(groups: list[int], labels: list[Any] | None, test_size: float, seed: int) -> set[int]:
    """The groups that form the test set: stratified by label when each group has one label."""
    rng = random.Random(seed)
    uniq = sorted(set(groups))
    if labels is not None:
        by_label: dict[Any, list[int]] = {}
        first_label: dict[int, Any] = {}
        for g, y in zip(groups, labels):
            first_label.setdefault(g, y)
        for g in uniq:
            by_label.setdefault(first_label[g], []).append(g)
        test: set[int] = set()
        for y, gs in sorted(by_label.items(), key=lambda kv: str(kv[0])):
            rng.shuffle(gs)
            k = min(len(gs) - 1, max(1, round(test_size * len(gs))))
            test.update(gs[:k])
        return test
    rng.shuffle(uniq)
    k = min(len(uniq) - 1, max(1, round(test_size * len(uniq))))
    return set(uniq[:k])


def _check_counts(task: Task, labels: list[Any], is_test: list[bool]) -> None:
    counts = Counter(labels)
    few = {y: n for y, n in counts.items() if n < 2}
    if few:
        raise TaskError(
            f"Task {task.name!r}: too few examples per class for a train/test split: "
            + ", ".join(f"{y!r} has {n}" for y, n in sorted(few.items(), key=lambda kv: str(kv[0])))
            + ". Every class needs at least 2 examples; add examples or drop the class "
              "(task.drop_rare(min_count)).")
    train = Counter(y for y, t in zip(labels, is_test) if not t)
    test = Counter(y for y, t in zip(labels, is_test) if t)
    if not test:
        raise TaskError(f"Task {task.name!r}: the test split is empty; add examples or raise test_size.")
    missing = [y for y in counts if train[y] == 0]
    if missing:
        raise TaskError(f"Task {task.name!r}: classes {missing} have no training example after the split "
                        "(they occur in too few texts); add examples or drop them with task.drop_rare(min_count).")


@dataclass
class _Examples:
    """The labelled examples of a task, in the order of the activation store's rows."""

    positions: list[list[int]]   # per text, token positions read (token-level tasks)
    text: list[int]              # per example, its text
    word: list[int]              # per example, its word index in the text
    label: list[Any]
    type: list[str]              # per example, its word type (control task)
    unaligned: int               # words no token overlaps


def _examples(lm: Any, task: Task, which: str) -> _Examples:
    """Align every labelled word to a token position (or take one example per text)."""
    if task.level == "sentence":
        n = len(task.texts)
        return _Examples([], list(range(n)), [0] * n, list(task.labels), task.flat_types(), 0)
    ex = _Examples([], [], [], [], [], 0)
    for start in range(0, len(task.texts), 64):
        batch = lm.tokenize(task.texts[start:start + 64])
        for r in range(batch.size):
            i = start + r
            n = int(batch.lengths[r])
            pos = align_words(batch.offsets[r][:n], task.spans[i], batch.special[r, :n].tolist(), which)
            keep = [j for j, p in enumerate(pos) if p >= 0]
            ex.unaligned += len(pos) - len(keep)
            ex.positions.append([pos[j] for j in keep])
            ex.text += [i] * len(keep)
            ex.word += keep
            ex.label += [task.labels[i][j] for j in keep]
            ex.type += [task.words[i][j].lower() for j in keep]
    return ex


def _probe_check(rep: "ProbeReport") -> Check | None:
    """Selectivity at the best layer (categorical tasks), best R² (numeric), best Spearman (trees)."""
    d = rep.diagnostics
    if "selectivity_at_best" in d:
        return Check("selectivity_at_best", float(d["selectivity_at_best"]), 0.05, higher_is_better=True)
    if "best_r2" in d:
        return Check("best_r2", float(d["best_r2"]), 0.05, higher_is_better=True)
    if "best_spearman" in d:
        return Check("best_spearman", float(d["best_spearman"]), 0.3, higher_is_better=True)
    return None


@register("probe", family="linear probing", takes="task", result=ProbeReport, target="none",
          summary="a probe per layer with control task, selectivity and MDL codelength",
          check=CheckSpec("selectivity_at_best", 0.05, higher_is_better=True, read=_probe_check),
          demo="interpretlm.probing.demo:probing_section", demo_order=60,
          cli_input="interpretlm.probing.tasks:from_spec")
def probe(lm: Any, task: Task, layers: str | int | Sequence[int] = "all", probe: str | _Probe = "auto", *,
          component: str = "resid_post", control: bool = True, mdl: bool = True, test_size: float = 0.2,
          seed: int = 0, which: str | None = None, pooling: str | None = None, batch_size: int = 16,
          path: str | os.PathLike | None = None, shard_size: int = 256) -> ProbeReport:
    """Train a probe on every layer's activations and score it on held-out examples.

    Args:
        lm: the model handle (decoder or encoder).
        task: a :class:`~interpretlm.probing.tasks.Task` (``il.probing.tasks.pos(texts)``...).
        layers: ``"all"`` (the embeddings, then every block), an index or a list of indices.
        probe: ``"auto"`` (logistic for classes, ridge for real numbers), ``"logistic"``,
            ``"ridge"``, ``"mlp"`` or a configured probe instance. Distance tasks always use
            the structural :class:`~interpretlm.probing.structural.DistanceProbe`.
        component: the block component read (``"resid_post"``, ``"mlp"``, ``"attn"``...).
        control: also train on a control task (one random label per word type) and report
            selectivity = accuracy - control accuracy (Hewitt & Liang, 2019). For
            sentence-level tasks each distinct text is a type, so the control task is a
            random relabelling of the texts; for regression the control values are drawn
            from the real ones and selectivity is the difference of R².
        mdl: also report the online codelength and compression (Voita & Titov, 2020).
        test_size: fraction of texts (of groups) held out; the split is by text so no
            sentence is seen on both sides.
        seed: the split, the control task, the MDL order and the probe's initialization.
        which: ``"last"`` / ``"first"`` sub-token of each word (default: the task's choice).
        pooling: how sentence-level tasks read a text (default: the task's, ``"last"``).
        batch_size: texts per forward pass.
        path: write the activations to this folder (resumable store) instead of memory.
        (progress bars follow the ``progress=`` every verb takes: see :mod:`interpretlm.progress`.)

    Returns:
        a :class:`~interpretlm.probing.report.ProbeReport`: ``.table`` (one row per
        layer: accuracy, macro-F1 or R², control accuracy, selectivity, MDL codelength and
        compression), ``.to_html()`` (layer curves).

    Example:
        >>> import interpretlm as il  # doctest: +SKIP
        >>> lm = il.load()  # doctest: +SKIP
        >>> rep = il.probe(lm, il.probing.tasks.pos(), layers="all", probe="logistic", control=True, mdl=True)  # doctest: +SKIP
        >>> print(rep.table)  # doctest: +SKIP
    """
    # ------------------------------------------------------------ checks before any work
    if not isinstance(task, Task):
        raise ProbingError(f"task must be a probing Task (e.g. il.probing.tasks.pos(texts)); got {type(task).__name__}.")
    task.validate()
    if not 0 < test_size < 1:
        raise ProbingError(f"test_size={test_size} must be between 0 and 1.")
    which = which or task.which
    if which not in WHICH:
        raise ProbingError(f"which={which!r} must be 'first' or 'last'.")
    pooling = pooling or task.pooling
    structural = task.kind == "distance"
    if structural:
        prb: Any = DistanceProbe(seed=seed)
        probe_name = "structural"
    else:
        if probe == "auto":
            probe = "ridge" if task.kind == "numeric" else "logistic"
        prb = make_probe(probe, seed=seed)
        probe_name = probe if isinstance(probe, str) else type(probe).__name__
        if task.kind == "numeric" and probe_name in ("logistic", "LogisticProbe"):
            raise ProbingError(f"Task {task.name!r} has real-valued labels; logistic regression predicts classes. "
                               "Use probe='ridge' or probe='mlp'.")
    names = expand_components(lm, component, layers)

    # ------------------------------------------------------------ examples and alignment
    ex = _examples(lm, task, which)
    positions, ex_text, ex_word, ex_label, ex_type = (ex.positions, ex.text, ex.word, ex.label, ex.type)
    n_unaligned = ex.unaligned
    if not ex_label:
        raise TaskError(f"Task {task.name!r}: no labelled word could be aligned to a token.")
    groups = task.groups or list(range(len(task.texts)))
    ex_group = [groups[i] for i in ex_text]
    strat = ex_label if task.level == "sentence" and task.kind == "categorical" else None
    test_groups = _split_groups(ex_group, strat, test_size, seed)
    is_test = [g in test_groups for g in ex_group]
    if task.kind == "categorical":
        _check_counts(task, ex_label, is_test)
    elif sum(is_test) == 0 or all(is_test):
        raise TaskError(f"Task {task.name!r}: too few texts for a train/test split; add texts.")

    # ------------------------------------------------------------ activations (one pass, every layer)
    if task.level == "token":
        store = activations(lm, task.texts, names, pooling="none", positions=positions, path=path,
                            shard_size=shard_size, batch_size=batch_size)
        # Row of example e: the texts' rows are in order, and the examples of a text follow its positions.
        rows = torch.arange(len(ex_label))
    else:
        store = activations(lm, task.texts, names, pooling=pooling, path=path, shard_size=shard_size,
                            batch_size=batch_size)
        rows = torch.arange(len(task.texts))
    test_mask = torch.tensor(is_test)
    tr, te = rows[~test_mask], rows[test_mask]

    classes = task.classes if task.kind == "categorical" else []
    if task.kind == "categorical":
        index = {y: k for k, y in enumerate(classes)}
        y_all = torch.tensor([index[y] for y in ex_label])
        maj = Counter(y_all[tr].tolist()).most_common(1)[0][0]
        baseline = accuracy(torch.full_like(y_all[te], maj), y_all[te])
    else:
        y_all = torch.tensor([float(y) for y in ex_label])
        baseline = 0.0 if not structural else float("nan")
    y_ctrl = None
    if control and not structural:
        ctrl = control_labels(ex_type, ex_label, seed=seed + 1)
        y_ctrl = torch.tensor([index[y] for y in ctrl]) if task.kind == "categorical" else torch.tensor(ctrl).float()

    scores = {m: [float("nan")] * len(names) for m in METRICS}
    if structural:
        sent_rows: dict[int, list[int]] = {}
        for e, t in enumerate(ex_text):
            sent_rows.setdefault(t, []).append(e)
        # Tree distances among the words that were aligned.
        sents = []
        for t, es in sent_rows.items():
            words = [ex_word[e] for e in es]
            D = tree_distances(task.heads[t])[words][:, words]
            sents.append((t, torch.tensor(es), D, groups[t] in test_groups))
    nonfinite_layers: list[str] = []
    with one_thread():   # many small fits: one thread is faster on a busy machine
        for li, name in enumerate(track(names, f"probing {task.name}")):
            X = store[name].float()
            if not torch.isfinite(X).all():
                # NaN/inf activations (an intervention, an overflow) cannot train a probe; the layer's
                # scores stay NaN and the report's non-finite scan fails the check for it.
                nonfinite_layers.append(name)
                continue
            if structural:
                train = [(X[es], D) for _, es, D, t in sents if not t and len(es) >= 2]
                test = [(X[es], D) for _, es, D, t in sents if t and len(es) >= 2]
                p = DistanceProbe(seed=seed).fit([h for h, _ in train], [d for _, d in train])
                ev = p.evaluate([h for h, _ in test], [d for _, d in test])
                scores["spearman"][li], scores["uuas"][li] = ev["spearman"], ev["uuas"]
                continue
            p = clone(prb).fit(X[tr], y_all[tr], len(classes) or None)
            pred = p.predict(X[te])
            if task.kind == "categorical":
                scores["accuracy"][li] = accuracy(pred, y_all[te])
                scores["macro_f1"][li] = macro_f1(pred, y_all[te])
                scores["train_score"][li] = accuracy(p.predict(X[tr]), y_all[tr])
            else:
                scores["r2"][li] = r2(pred, y_all[te])
                scores["train_score"][li] = r2(p.predict(X[tr]), y_all[tr])
            if y_ctrl is not None:
                pc = clone(prb).fit(X[tr], y_ctrl[tr], len(classes) or None)
                if task.kind == "categorical":
                    scores["control_accuracy"][li] = accuracy(pc.predict(X[te]), y_ctrl[te])
                    scores["selectivity"][li] = selectivity(scores["accuracy"][li], scores["control_accuracy"][li])
                else:
                    scores["control_r2"][li] = r2(pc.predict(X[te]), y_ctrl[te])
                    scores["selectivity"][li] = scores["r2"][li] - scores["control_r2"][li]
            if mdl and task.kind == "categorical":
                code = online_codelength(lambda: clone(prb), X[tr], y_all[tr], len(classes), seed=seed)
                scores["mdl_codelength"][li] = code["codelength"]
                scores["mdl_compression"][li] = code["compression"]

    rep = ProbeReport(
        model=lm.name, method="probe",
        task={"name": task.name, "level": task.level, "kind": task.kind, "classes": [str(c) for c in classes],
              "n_texts": len(task.texts), "n_examples": len(ex_label), "which": which,
              "pooling": pooling if task.level == "sentence" else None, "info": _jsonable(task.info)},
        probe={"name": probe_name, **_jsonable(prb.get_params() if hasattr(prb, "get_params") else vars(prb))},
        layers=names, scores=scores, baseline=baseline,
        split={"n_train": int(len(tr)), "n_test": int(len(te)), "test_size": test_size, "seed": seed,
               "by": "group" if task.groups else "text"},
        policy=dict(lm.tokenize(task.texts[0]).policy),
        diagnostics={"forward_passes": -(-len(task.texts) // batch_size), "texts": len(task.texts),
                     "unaligned_words": n_unaligned, "store": str(store.path) if store.path else "memory",
                     "nonfinite_layers": nonfinite_layers,
                     "uniform_codelength_bits": (len(tr) * math.log2(max(len(classes), 2))
                                                 if mdl and task.kind == "categorical" else None)})
    _check(rep)
    return rep


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, dict):
            out[k] = _jsonable(v)
        else:
            out[k] = str(v)
    return out


def _check(rep: ProbeReport) -> None:
    """The report's own checks: better than the baseline somewhere, and selective where it is best."""
    name, best = rep.best_layer()
    kind = rep.task["kind"]
    notes = []
    if kind == "categorical":
        margin = best - rep.baseline
        rep.diagnostics["best_layer"], rep.diagnostics["best_accuracy"] = name, best
        rep.diagnostics["above_baseline"] = margin
        if not margin > 0.02:
            notes.append(f"the probe is no better than the majority-class baseline ({rep.baseline:.3f}) at any layer: "
                         "the representation does not encode this task linearly (or the data are too few)")
        sel = rep.scores["selectivity"][rep.layers.index(name)] if name else float("nan")
        rep.diagnostics["selectivity_at_best"] = sel
        if sel == sel and sel < 0.05 and margin > 0.02:
            notes.append(f"selectivity at the best layer is only {sel:.3f}: the probe does about as well on a control "
                         "task with random labels per word type, so its accuracy may reflect word identity, not the property")
    elif kind == "numeric":
        rep.diagnostics["best_layer"], rep.diagnostics["best_r2"] = name, best
        if not best > 0.05:
            notes.append(f"R² stays at or below {best:.3f} at every layer")
    else:
        rep.diagnostics["best_layer"], rep.diagnostics["best_spearman"] = name, best
        if not best > 0.3:
            notes.append(f"the structural probe's Spearman correlation peaks at only {best:.3f}")
    for n in notes:
        warnings.warn(f"Probing {rep.task['name']!r}: {n}.", CheckWarning, stacklevel=3)
