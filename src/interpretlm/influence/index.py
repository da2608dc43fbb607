"""The influence index: training gradients projected and stored once, queries scored against them.

**What a score means.** For training example ``z`` (one of ``N``) and a query ``q`` with loss
``L_q = -target`` (the negative log-probability of the target continuation; with no target, the
query text's own next-token loss), the influence-function score is

    score(z, q) = (1/N) ∇L_q^T (H + λI)^{-1} ∇L_z

the first-order *decrease* of the query's loss when ``z`` is up-weighted by ``1/N`` in the mean
training loss, i.e. as if it appeared twice (Koh & Liang 2017: ``dL_q/dε = -∇L_q^T H^{-1} ∇L_z``,
taken at ``ε = 1/N`` with the sign flipped). Its unit is nats of the query's loss.
**Positive: a proponent** (more of ``z`` makes the target more likely); **negative: an opponent**.
``L_z`` is the example's summed next-token cross-entropy; ``∇`` is taken with respect to the
weights of the selected linear layers only (biases, embeddings and norms are left out) and
projected per layer (:mod:`.gradients`).

Per method (``method=``):

* ``"ekfac"`` / ``"kfac"``: ``H`` is the EK-FAC / K-FAC approximation of the Gauss-Newton Hessian
  of the mean training loss (:mod:`.hessian`), damped by ``λ = damping × mean eigenvalue`` per layer.
* ``"dot"``: ``H = I``: ``(1/N) ∇L_q · ∇L_z``, the first-order decrease of ``L_q`` after one
  gradient step of learning rate ``1/N`` on ``z``.
* ``"tracin"`` (Pruthi et al. 2020): ``(1/N) Σ_c η_c ∇L_q(θ_c) · ∇L_z(θ_c)`` over checkpoints ``θ_c``
  with learning rates ``η_c``: the decrease of ``L_q`` that ``z``'s own steps caused along training.
* ``"cosine"``: the cosine of the two projected gradients, in [-1, 1] (no ``1/N``; unitless).
* ``"trackstar"`` (Chang et al. 2024): the cosine after dividing each projected gradient by the root
  of the training gradients' mean square, element-wise (the optimizer's second-moment
  normalisation, ``+ 1e-3 ×`` its mean for stability), in [-1, 1].
* ``"bm25"``: the BM25 lexical score (``bm25s``) of each training text for the query text plus its
  target text; ≥ 0, no gradients, no opponents (a baseline).

Memory is bounded by ``batch_size`` (examples per forward/backward pass: activations and output
gradients of the selected layers for one batch) and ``projection`` (each example stores
``k_out × k_in ≤ projection²`` floats per layer); training gradients are streamed from disk one
shard (``shard_size`` examples) at a time when scoring.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ContextLengthError
from ..progress import bar, track
from ..targets import as_target
from .errors import FingerprintMismatchError, InfluenceError, QueryTooLongError
from .gradients import ModuleSpec, Projector, lm_loss_rows, module_specs, resolve_modules, run_pass
from .hessian import eigenbasis, inverse_hvp, rotate
from .store import atomic_json, atomic_save, disk_bytes, load as load_tensors, shard_path
from .texts import read_train, tokenize_texts

METHODS = ("ekfac", "kfac", "dot", "cosine", "trackstar", "tracin", "bm25")
FORMAT = "interpretlm-influence/1"
_TRACKSTAR_EPS = 1e-3  # relative to the mean second moment of the layer


class Index:
    """Projected training gradients on disk, with the Hessian factors to score queries against them.

    Build one with :func:`index`; reopen one with :func:`load`. See the module docstring for what
    a score means.

    Attributes:
        path: the index folder.
        texts: the ``N`` training texts.
        method: the default scoring method.
        specs: the selected linear layers (:class:`~.gradients.ModuleSpec`).
        computed: shards computed by this object so far, by phase (the rest were on disk).
    """

    def __init__(self, lm: Any, path: Path, manifest: dict[str, Any], texts: list[str], *, method: str,
                 damping: float, batch_size: int, checkpoints: Sequence[Any] = (), absolute_damping: float = 0.0) -> None:
        self.lm, self.path, self.manifest, self.texts = lm, Path(path), manifest, texts
        self.method, self.damping, self.batch_size = method, float(damping), int(batch_size)
        self.absolute_damping = float(absolute_damping)
        self.specs = [ModuleSpec(**s) for s in manifest["modules"]]
        self.projector = Projector(self.specs, int(manifest["seed"]))
        self.checkpoints = list(checkpoints)
        self.computed: dict[str, int] = {"grads": 0, "fisher": 0, "lambda": 0}
        self.seconds: dict[str, float] = {}
        self._bm25: Any = None

    # ------------------------------------------------------------------ facts
    @property
    def n_train(self) -> int:
        return len(self.texts)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_train / int(self.manifest["shard_size"]))

    def disk_bytes(self) -> int:
        """Bytes the index takes on disk."""
        return disk_bytes(self.path)

    def __repr__(self) -> str:
        return (f"Index({str(self.path)!r}, {self.n_train} texts, {len(self.specs)} modules, "
                f"projection {self.manifest['projection']}, method {self.method!r})")

    # ------------------------------------------------------------------ building
    def _models(self, method: str) -> list[tuple[Any, Path, float]]:
        """``(model, folder, weight)`` of each gradient store ``method`` reads."""
        if method == "tracin":
            if not self.checkpoints:
                raise InfluenceError("method='tracin' needs checkpoints: il.influence.index(..., checkpoints=[lm_1, "
                                     "lm_2, ...], learning_rates=[...]) (models saved along training).")
            lrs = [c["learning_rate"] for c in self.manifest["checkpoints"]]
            return [(m, self.path / f"ckpt-{i}", lr) for i, (m, lr) in enumerate(zip(self.checkpoints, lrs))]
        return [(self.lm, self.path, 1.0)]

    def _modules_of(self, model: Any) -> list[tuple[str, Any]]:
        return resolve_modules(model, [s.name for s in self.specs])

    def build(self, method: str | None = None) -> "Index":
        """Compute every missing shard (and factor) ``method`` needs; whole shards on disk are kept."""
        method = method or self.method
        if method == "bm25":
            return self
        for model, folder, _ in self._models(method):
            self._extract(model, folder)
            if method in ("kfac", "ekfac", "trackstar", "cosine"):
                self._stats(model, folder)
        return self

    def _rows(self, i: int) -> list[str]:
        s = int(self.manifest["shard_size"])
        return self.texts[i * s:(i + 1) * s]

    def _extract(self, model: Any, folder: Path) -> None:
        todo = [i for i in range(self.n_shards) if not shard_path(folder, "grads", i).exists()]
        if not todo:
            return
        t0 = time.perf_counter()
        mods = self._modules_of(model)
        with bar(self.n_shards, "influence: training gradients", initial=self.n_shards - len(todo)) as b:
            for i in todo:
                out: dict[str, Any] = {}
                grads: dict[str, list[torch.Tensor]] = {s.name: [] for s in self.specs}
                losses, tokens = [], 0
                rows = self._rows(i)
                for start in range(0, len(rows), self.batch_size):
                    batch = tokenize_texts(model, rows[start:start + self.batch_size], "training text")
                    po = run_pass(model, mods, self.projector, batch, lm_loss_rows(model), covariances=True)
                    for name, g in po.grads.items():
                        grads[name].append(g)
                    for name in po.a_cov:
                        out[f"A::{name}"] = out.get(f"A::{name}", 0) + po.a_cov[name]
                        out[f"S::{name}"] = out.get(f"S::{name}", 0) + po.g_cov[name]
                    losses.append(po.losses.float().cpu())
                    tokens += po.tokens
                out.update({f"G::{n}": torch.cat(v) for n, v in grads.items()})
                out["__loss"] = torch.cat(losses)
                out["__tokens"] = torch.tensor([float(tokens)], dtype=torch.float64)
                atomic_save(out, shard_path(folder, "grads", i))
                self.computed["grads"] += 1
                b.update()
        self.seconds["gradients"] = self.seconds.get("gradients", 0.0) + time.perf_counter() - t0

    def _fisher_sums(self, model: Any, folder: Path) -> tuple[dict[str, torch.Tensor], float]:
        """Covariance sums over the training set (from the gradient shards, or a pass with sampled labels)."""
        phase = "grads" if self.manifest["fisher"] == "empirical" else "fisher"
        if phase == "fisher":
            todo = [i for i in range(self.n_shards) if not shard_path(folder, "fisher", i).exists()]
            mods = self._modules_of(model)
            with bar(self.n_shards, "influence: covariances (sampled labels)", initial=self.n_shards - len(todo)) as b:
                for i in todo:
                    out: dict[str, Any] = {}
                    tokens = 0
                    gen = torch.Generator().manual_seed(int(self.manifest["seed"]) * 7919 + i)
                    rows = self._rows(i)
                    for start in range(0, len(rows), self.batch_size):
                        batch = tokenize_texts(model, rows[start:start + self.batch_size], "training text")
                        po = run_pass(model, mods, self.projector, batch, lm_loss_rows(model, sampled=True, generator=gen),
                                      covariances=True, grads=False)
                        for name in po.a_cov:
                            out[f"A::{name}"] = out.get(f"A::{name}", 0) + po.a_cov[name]
                            out[f"S::{name}"] = out.get(f"S::{name}", 0) + po.g_cov[name]
                        tokens += po.tokens
                    out["__tokens"] = torch.tensor([float(tokens)], dtype=torch.float64)
                    atomic_save(out, shard_path(folder, "fisher", i))
                    self.computed["fisher"] += 1
                    b.update()
        sums: dict[str, torch.Tensor] = {}
        tokens = 0.0
        for i in range(self.n_shards):
            sh = load_tensors(shard_path(folder, phase, i))
            tokens += float(sh["__tokens"][0])
            for k, v in sh.items():
                if k.startswith(("A::", "S::")):
                    sums[k] = sums.get(k, 0) + v
        return sums, tokens

    def _shards(self, folder: Path, desc: str):
        for i in track(range(self.n_shards), desc):
            yield i, load_tensors(shard_path(folder, "grads", i))

    def _stats(self, model: Any, folder: Path) -> dict[str, torch.Tensor]:
        """Eigenbases, K-FAC / EK-FAC eigenvalues, second moments and per-example norms (cached on disk)."""
        file = folder / f"stats-{self.manifest['fisher']}.safetensors"
        if file.exists():
            return load_tensors(file)
        self._extract(model, folder)
        t0 = time.perf_counter()
        n = self.n_train
        sums, tokens = self._fisher_sums(model, folder)
        st: dict[str, torch.Tensor] = {}
        for s in self.specs:
            q_a, l_a, q_s, l_s = eigenbasis(sums[f"A::{s.name}"], sums[f"S::{s.name}"], tokens, n)
            st.update({f"QA::{s.name}": q_a, f"QS::{s.name}": q_s, f"KFAC::{s.name}": torch.outer(l_s, l_a)})
        second = {s.name: torch.zeros(s.k_out, s.k_in, dtype=torch.float64) for s in self.specs}
        lam = {s.name: torch.zeros(s.k_out, s.k_in, dtype=torch.float64) for s in self.specs}
        norm = torch.zeros(n, dtype=torch.float64)
        start = 0
        for i, sh in self._shards(folder, "influence: eigenvalue correction"):
            for s in self.specs:
                g = sh[f"G::{s.name}"].double()
                second[s.name] += g.pow(2).sum(0)
                norm[start:start + g.shape[0]] += g.pow(2).sum((1, 2))
                if self.manifest["fisher"] == "empirical":
                    lam[s.name] += rotate(g, st[f"QS::{s.name}"], st[f"QA::{s.name}"]).pow(2).sum(0)
            start += sh["__loss"].shape[0]
        if self.manifest["fisher"] == "sampled":
            lam = self._sampled_lambda(model, folder, st)
        for s in self.specs:
            st[f"EKFAC::{s.name}"] = lam[s.name] / n
            r = second[s.name] / n
            st[f"R::{s.name}"] = r + _TRACKSTAR_EPS * float(r.mean()) + 1e-30
        norm_ts = torch.zeros(n, dtype=torch.float64)
        start = 0
        for i, sh in self._shards(folder, "influence: normalised gradients"):
            for s in self.specs:
                g = sh[f"G::{s.name}"].double()
                norm_ts[start:start + g.shape[0]] += (g / st[f"R::{s.name}"].sqrt()).pow(2).sum((1, 2))
            start += sh["__loss"].shape[0]
        st["__norm"], st["__norm_trackstar"] = norm.sqrt(), norm_ts.sqrt()
        atomic_save(st, file)
        self.seconds["factors"] = self.seconds.get("factors", 0.0) + time.perf_counter() - t0
        return st

    def _sampled_lambda(self, model: Any, folder: Path, st: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """EK-FAC eigenvalues from per-example gradients with sampled labels (sharded, resumable)."""
        todo = [i for i in range(self.n_shards) if not shard_path(folder, "lambda", i).exists()]
        mods = self._modules_of(model)
        with bar(self.n_shards, "influence: eigenvalue correction (sampled labels)",
                 initial=self.n_shards - len(todo)) as b:
            for i in todo:
                out: dict[str, Any] = {}
                gen = torch.Generator().manual_seed(int(self.manifest["seed"]) * 7919 + 104729 + i)
                rows = self._rows(i)
                for start in range(0, len(rows), self.batch_size):
                    batch = tokenize_texts(model, rows[start:start + self.batch_size], "training text")
                    po = run_pass(model, mods, self.projector, batch, lm_loss_rows(model, sampled=True, generator=gen))
                    for s in self.specs:
                        r = rotate(po.grads[s.name].double(), st[f"QS::{s.name}"], st[f"QA::{s.name}"]).pow(2).sum(0)
                        out[f"L::{s.name}"] = out.get(f"L::{s.name}", 0) + r
                atomic_save(out, shard_path(folder, "lambda", i))
                self.computed["lambda"] += 1
                b.update()
        lam: dict[str, torch.Tensor] = {}
        for i in range(self.n_shards):
            for k, v in load_tensors(shard_path(folder, "lambda", i)).items():
                lam[k[3:]] = lam.get(k[3:], 0) + v
        return lam

    # ------------------------------------------------------------------ queries
    def query_gradients(self, queries: str | Sequence[str], target: Any = None, *, model: Any = None
                        ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Projected gradients of the query losses: ``({name: [n_query, k_out, k_in]}, exact ||∇L_q||²
        [n_query], projected ||·||² [n_query])``; the loss is ``-target`` (or the query text's own
        next-token loss when ``target`` is ``None``)."""
        model = model if model is not None else self.lm
        queries = [queries] if isinstance(queries, str) else list(queries)
        if not queries:
            raise InfluenceError("No queries were given: pass a query string or a list of them.")
        tgt = as_target(target, model) if target is not None else None
        batch = tokenize_texts(model, queries, "query")
        if tgt is not None:
            try:
                batch = tgt.prepare(model, batch)
            except ContextLengthError as exc:
                raise QueryTooLongError(f"A query with its target is longer than the model's context "
                                        f"({model.n_ctx} tokens): {exc}") from exc
        loss = (lambda out: -tgt(out)) if tgt is not None else lm_loss_rows(model)
        mods = self._modules_of(model)
        grads: dict[str, list[torch.Tensor]] = {s.name: [] for s in self.specs}
        exact, proj = [], []
        for start in range(0, batch.size, self.batch_size):
            po = run_pass(model, mods, self.projector, batch.rows(start, start + self.batch_size), loss, norms=True)
            for name, g in po.grads.items():
                grads[name].append(g.double())
            exact.append(po.exact_sq_norm)
            proj.append(po.proj_sq_norm)
        return {n: torch.cat(v) for n, v in grads.items()}, torch.cat(exact), torch.cat(proj)

    def scores(self, queries: str | Sequence[str], target: Any = None, *, method: str | None = None,
               query_rank: int | None = None) -> torch.Tensor:
        """Influence of every training text on every query: ``[n_query, n_train]`` (float32).

        Args:
            queries: a query string or a list of them.
            target: what the query's loss is, as for every method (``il.Continuation(" Paris")``,
                ``il.NextToken(...)``); the loss is ``-target``. ``None``: the query's own next-token loss.
            method: override the index's default method (one of ``METHODS``).
            query_rank: keep only the top ``r`` singular directions of each layer's (preconditioned)
                query gradient, as Kronfluence's ``query_gradient_rank`` (cheaper for many queries).

        Returns:
            the scores, signed and normalised as the module docstring says (positive: proponent).

        Example:
            >>> import interpretlm as il
            >>> from interpretlm.testing import tiny_lm
            >>> idx = il.influence.index(tiny_lm("llama"), ["Mary went home", "John ate"], method="dot",
            ...                          modules=["blocks.1.mlp_out"], progress=False)
            >>> idx.scores(["Mary went"]).shape
            torch.Size([1, 2])
        """
        method = method or self.method
        if method not in METHODS:
            raise InfluenceError(f"method={method!r}: choose one of {', '.join(METHODS)}.")
        queries = [queries] if isinstance(queries, str) else list(queries)
        if method == "bm25":
            return self._bm25_scores(queries, target)
        if query_rank is not None and int(query_rank) < 1:
            raise InfluenceError(f"query_rank must be a positive integer or None; got {query_rank!r}.")
        self.build(method)
        total = torch.zeros(len(queries), self.n_train, dtype=torch.float64)
        self.last_projection_error = 0.0
        for model, folder, weight in self._models(method):
            qg, exact, proj = self.query_gradients(queries, target, model=model)
            ok = exact > 0
            if ok.any():
                self.last_projection_error = max(self.last_projection_error,
                                                 float((proj[ok] / exact[ok] - 1).abs().max()))
            st = self._stats(model, folder) if method in ("kfac", "ekfac", "trackstar", "cosine") else {}
            pre = {s.name: self._precondition(method, s.name, qg[s.name], st) for s in self.specs}
            if query_rank is not None:
                pre = {n: _low_rank(v, int(query_rank)) for n, v in pre.items()}
            row = torch.ones(len(queries), dtype=torch.float64)
            col = torch.full((self.n_train,), 1.0 / self.n_train, dtype=torch.float64)
            if method in ("cosine", "trackstar"):
                qn = sum((v.pow(2) if method == "cosine" else v.pow(2) * st[f"R::{n}"]).sum((1, 2))
                         for n, v in pre.items())
                row = 1.0 / qn.sqrt().clamp_min(1e-30)
                col = 1.0 / st["__norm" if method == "cosine" else "__norm_trackstar"].clamp_min(1e-30)
            start = 0
            for _, sh in self._shards(folder, f"influence: scoring ({method})"):
                n = sh["__loss"].shape[0]
                s = sum(torch.einsum("qoi,noi->qn", pre[name], sh[f"G::{name}"].double()) for name in pre)
                total[:, start:start + n] += weight * s
                start += n
            total = total * row[:, None] * col[None, :] if method != "tracin" else total
        if method == "tracin":
            total = total / self.n_train
        return total.float()

    def _precondition(self, method: str, name: str, v: torch.Tensor, st: dict[str, torch.Tensor]) -> torch.Tensor:
        if method in ("kfac", "ekfac"):
            lam = st[f"{method.upper()}::{name}"]
            return inverse_hvp(v, st[f"QS::{name}"], st[f"QA::{name}"], lam, self.damping, self.absolute_damping)
        if method == "trackstar":
            return v / st[f"R::{name}"]  # <q/√R, G/√R> = <q/R, G>
        return v

    def _bm25_scores(self, queries: list[str], target: Any) -> torch.Tensor:
        import bm25s

        if self._bm25 is None:
            self._bm25 = bm25s.BM25()
            self._bm25.index(bm25s.tokenize(self.texts, stopwords=None, return_ids=False, show_progress=False),
                             show_progress=False)
        extra = ""
        if target is not None:
            t = as_target(target)
            text = getattr(t, "text", None) or getattr(t, "token", None)
            extra = text if isinstance(text, str) else ""
        rows = []
        for q in queries:
            words = bm25s.tokenize([q + " " + extra], stopwords=None, return_ids=False, show_progress=False)[0]
            rows.append(torch.as_tensor(self._bm25.get_scores(words), dtype=torch.float64) if words
                        else torch.zeros(self.n_train, dtype=torch.float64))
        return torch.stack(rows).float()

    def top(self, query: str, k: int = 10, target: Any = None, *, method: str | None = None,
            query_rank: int | None = None) -> Any:
        """The ``k`` strongest proponents and opponents of one query, with their texts and scores.

        Returns:
            an :class:`~.result.Influences` result (``proponents`` / ``opponents``: dicts with
            ``index``, ``text``, ``score``; ``scores``: all ``[n_train]``).

        Example:
            >>> import interpretlm as il
            >>> from interpretlm.testing import tiny_lm
            >>> idx = il.influence.index(tiny_lm("llama"), ["Mary went home", "John ate", "Mary ran"],
            ...                          method="dot", modules="mlp", progress=False)
            >>> r = idx.top("Mary went", k=1)
            >>> len(r.proponents) + len(r.opponents) <= 2
            True
        """
        from .result import Influences

        if isinstance(query, (list, tuple)) and query and all(isinstance(t, int) for t in query):
            ids, query = list(query), self.lm.tokenizer.decode(list(query), skip_special_tokens=True)
        elif isinstance(query, str) and query.strip():
            ids = None
        else:
            raise InfluenceError("The query is empty: give the text (or token ids) whose prediction is explained.")
        method = method or self.method
        t0 = time.perf_counter()
        asked = [query] if ids is None or method == "bm25" else [ids]
        s = self.scores(asked, target, method=method, query_rank=query_rank)[0]
        order = torch.argsort(s, descending=True).tolist()
        pro = [i for i in order if s[i] > 0][:k]
        opp = [i for i in reversed(order) if s[i] < 0][:k]
        rows = lambda ids: [{"index": i, "text": self.texts[i], "score": float(s[i])} for i in ids]  # noqa: E731
        t = as_target(target) if target is not None else None
        return Influences(
            query=query, estimator=method, n_train=self.n_train, scores=s.tolist(), proponents=rows(pro),
            opponents=rows(opp), modules=[sp.name for sp in self.specs],
            projection=self.manifest["projection"], target=t.to_dict() if t is not None else None,
            diagnostics={"projection_error": float(getattr(self, "last_projection_error", 0.0))
                         if method != "bm25" else None,
                         "seconds": time.perf_counter() - t0, "disk_bytes": self.disk_bytes(),
                         "shards_computed": sum(self.computed.values())})


def _low_rank(v: torch.Tensor, r: int) -> torch.Tensor:
    """Each ``[k_out, k_in]`` slice of ``v [n, k_out, k_in]`` truncated to its top ``r`` singular directions."""
    if r >= min(v.shape[-2:]):
        return v
    u, s, vh = torch.linalg.svd(v, full_matrices=False)
    return (u[..., :r] * s[..., None, :r]) @ vh[..., :r, :]


def _sha(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def index(lm: Any, train: Any, *, method: str = "ekfac", modules: str | Sequence[str] = "mlp",
          path: str | Path | None = None, projection: int | None = 32, batch_size: int = 8, shard_size: int = 64,
          seed: int = 0, fisher: str = "empirical", damping: float = 0.1, absolute_damping: float = 0.0,
          checkpoints: Sequence[Any] | None = None,
          learning_rates: Sequence[float] | None = None, progress: Any = None) -> Index:
    """Fit an influence index once: per-example projected gradients of ``train`` (and the Hessian
    factors ``method`` needs), stored in ``path`` so scoring a query never recomputes them.

    Args:
        lm: the model the training texts trained (or a model to attribute).
        train: a list of texts, or a ``.jsonl`` / ``.txt`` file (see :func:`read_train`).
        method: the default scoring method (``"ekfac"``, ``"kfac"``, ``"dot"``, ``"cosine"``,
            ``"trackstar"``, ``"tracin"``, ``"bm25"``); ``scores(method=)`` may use any other.
        modules: ``"mlp"``, ``"attn"``, ``"all"`` or a list of linear layers, ``"embed"`` and
            ``"unembed"`` included (see :func:`~.gradients.resolve_modules`).
        path: the index folder (created; reopened and completed if it holds the same index;
            ``None``: a new temporary folder).
        projection: projected width per side of each layer (``None``: no projection, exact).
        batch_size: examples per forward/backward pass (bounds activation memory).
        shard_size: examples per shard on disk (the unit of resumption).
        seed: seeds the projections and the sampled labels.
        fisher: ``"empirical"`` (covariances from the training tokens' own labels: one pass) or
            ``"sampled"`` (labels drawn from the model, the true Fisher: two more passes).
        damping: K-FAC / EK-FAC damping relative to each layer's mean eigenvalue.
        absolute_damping: added to it (e.g. the L2 coefficient the model was trained with, so that
            ``H + λI`` is the Hessian of the regularised training loss).
        checkpoints: models saved along training, for ``"tracin"``; ``learning_rates`` their
            learning rates (default 1 each).
        progress: progress bars (see :mod:`interpretlm.progress`).

    Raises:
        EmptyTrainingSetError, UnknownModuleError, QueryTooLongError (a training text longer than
        the context), FingerprintMismatchError (``path`` holds an index of other weights),
        InfluenceError (other settings).

    Example:
        >>> import interpretlm as il
        >>> from interpretlm.testing import tiny_lm
        >>> idx = il.influence.index(tiny_lm("llama"), ["Mary went home", "John ate"], method="ekfac",
        ...                          modules="mlp", progress=False)
        >>> idx.scores("Mary went", il.Continuation(" home")).shape
        torch.Size([1, 2])
    """
    from ..progress import policy

    if method not in METHODS:
        raise InfluenceError(f"method={method!r}: choose one of {', '.join(METHODS)}.")
    if fisher not in ("empirical", "sampled"):
        raise InfluenceError(f"fisher={fisher!r}: choose 'empirical' or 'sampled'.")
    if projection is not None and int(projection) < 1:
        raise InfluenceError(f"projection must be a positive integer or None; got {projection!r}.")
    if int(batch_size) < 1 or int(shard_size) < 1:
        raise InfluenceError("batch_size and shard_size must be positive integers.")
    texts = read_train(train)
    specs = module_specs(lm, modules, projection)
    for start in range(0, len(texts), 256):  # every text must fit the context before anything is written
        tokenize_texts(lm, texts[start:start + 256], "training text")
    ckpts = list(checkpoints or [])
    lrs = list(learning_rates) if learning_rates is not None else [1.0] * len(ckpts)
    if len(lrs) != len(ckpts):
        raise InfluenceError(f"{len(ckpts)} checkpoints but {len(lrs)} learning rates.")
    for c in ckpts:
        module_specs(c, [s.name for s in specs], projection)  # the same layers must exist in each
    manifest = {"format": FORMAT, "model": lm.name, "fingerprint": lm.fingerprint, "n_train": len(texts),
                "texts_sha256": _sha(texts), "modules": [s.to_dict() for s in specs], "projection": projection,
                "seed": int(seed), "shard_size": int(shard_size), "fisher": fisher,
                "checkpoints": [{"fingerprint": c.fingerprint, "learning_rate": float(lr)} for c, lr in zip(ckpts, lrs)]}
    folder = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="interpretlm-influence-"))
    mfile = folder / "manifest.json"
    if mfile.exists():
        old = json.loads(mfile.read_text())
        if old.get("fingerprint") != manifest["fingerprint"]:
            raise FingerprintMismatchError(
                f"{str(folder)!r} holds an index built on other weights ({old.get('model')!r}, fingerprint "
                f"{old.get('fingerprint')}), not those of {lm.name!r} ({lm.fingerprint}); use another path.")
        if old != manifest:
            diff = sorted(k for k in manifest if old.get(k) != manifest[k])
            raise InfluenceError(f"{str(folder)!r} holds an index with other settings ({', '.join(diff)}); "
                                 "use another path or the same settings.")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        atomic_json(manifest, mfile)
    idx = Index(lm, folder, manifest, texts, method=method, damping=damping, batch_size=batch_size, checkpoints=ckpts,
                absolute_damping=absolute_damping)
    with policy(progress):
        idx.build(method)
    return idx


def load(path: str | Path, lm: Any, *, method: str | None = None, damping: float = 0.1, absolute_damping: float = 0.0,
         batch_size: int = 8, checkpoints: Sequence[Any] | None = None) -> Index:
    """Reopen the index in ``path`` for ``lm`` (which must have the weights it was built on).

    Raises:
        FingerprintMismatchError: ``lm`` (or a checkpoint) is not the model the index was built on.
        InfluenceError: ``path`` holds no index.

    Example:
        >>> import interpretlm as il, tempfile
        >>> from interpretlm.testing import tiny_lm
        >>> folder = tempfile.mkdtemp()
        >>> _ = il.influence.index(tiny_lm("llama"), ["Mary went home"], method="dot", path=folder, progress=False)
        >>> il.influence.load(folder, tiny_lm("llama")).n_train
        1
    """
    folder = Path(path)
    mfile = folder / "manifest.json"
    if not mfile.exists():
        raise InfluenceError(f"{str(folder)!r} holds no influence index (no manifest.json).")
    manifest = json.loads(mfile.read_text())
    if manifest.get("format") != FORMAT:
        raise InfluenceError(f"{str(folder)!r}: unknown index format {manifest.get('format')!r}.")
    if manifest["fingerprint"] != lm.fingerprint:
        raise FingerprintMismatchError(
            f"The index in {str(folder)!r} was built on {manifest['model']!r} (fingerprint {manifest['fingerprint']}); "
            f"{lm.name!r} has other weights ({lm.fingerprint}). Rebuild the index for this model.")
    ckpts = list(checkpoints or [])
    want = [c["fingerprint"] for c in manifest["checkpoints"]]
    if ckpts and [c.fingerprint for c in ckpts] != want:
        raise FingerprintMismatchError("The checkpoints given are not those the index was built on.")
    texts = [json.loads(ln)["text"] for ln in (folder / "texts.jsonl").read_text(encoding="utf-8").splitlines() if ln]
    default = method or ("tracin" if want else "ekfac")
    return Index(lm, folder, manifest, texts, method=default, damping=damping, batch_size=batch_size, checkpoints=ckpts,
                 absolute_damping=absolute_damping)
