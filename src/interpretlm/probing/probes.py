"""Probes: logistic regression, ridge (closed form) and a one-hidden-layer MLP, in PyTorch.

They follow scikit-learn's conventions: constructor arguments are plain settings,
``fit(X, y)`` learns and returns the probe, learned values end in ``_``. Features are
standardized with the training mean and deviation inside ``fit``. ``y`` holds class
indices ``[n]`` (int64) for classification and real numbers ``[n]`` for regression.

Example:
    >>> X = torch.randn(200, 8); y = (X[:, 0] > 0).long()
    >>> LogisticProbe(seed=0).fit(X, y).score(X, y) > 0.95
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .errors import ProbingError


@contextmanager
def one_thread() -> Iterator[None]:
    """Run small probe fits on one thread.

    Probe fits are many small matrix products; with several intra-op threads on a busy
    machine each one waits on the others (30 ms instead of 0.3 ms per step here), so one
    thread is much faster. The previous setting is restored on exit.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _standardize(X: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (X.float() - mean) / std


class _Probe:
    task = "classification"

    def _prep(self, X: torch.Tensor) -> torch.Tensor:
        self.mean_ = X.float().mean(0)
        self.std_ = X.float().std(0, unbiased=False).clamp_min(1e-6)
        return _standardize(X, self.mean_, self.std_)

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """``[n, classes]`` class probabilities."""
        return torch.softmax(self.decision(X), dim=-1)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """``[n]`` class indices (classification) or values (regression)."""
        d = self.decision(X)
        return d.argmax(-1) if d.dim() == 2 and not getattr(self, "regression_", False) else d.squeeze(-1)

    def score(self, X: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy (classification) or R² (regression)."""
        p = self.predict(X)
        return r2(p, y) if getattr(self, "regression_", False) else accuracy(p, y)


class LogisticProbe(_Probe):
    """Multinomial logistic regression with an L2 penalty, fitted by L-BFGS.

    Args:
        l2: weight of ``0.5 * ||W||²`` per example (on standardized features).
        max_iter: L-BFGS iterations.
        seed: unused by the convex fit but kept so every probe takes one.
    """

    def __init__(self, l2: float = 1e-3, max_iter: int = 100, seed: int = 0) -> None:
        self.l2, self.max_iter, self.seed = l2, max_iter, seed

    def fit(self, X: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> "LogisticProbe":
        if y.dtype.is_floating_point:
            raise ProbingError("Logistic regression predicts classes; use probe='ridge' or 'mlp' for real-valued labels.")
        Z = self._prep(X)
        k = int(n_classes or int(y.max()) + 1)
        self.regression_ = False
        W = torch.zeros(Z.shape[1], k, requires_grad=True)
        b = torch.zeros(k, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], lr=1, max_iter=self.max_iter, history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-6)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(Z @ W + b, y) + 0.5 * self.l2 * (W * W).sum()
            loss.backward()
            return loss
        with torch.enable_grad(), one_thread():
            opt.step(closure)
        self.coef_, self.intercept_ = W.detach(), b.detach()
        return self

    def decision(self, X: torch.Tensor) -> torch.Tensor:
        return _standardize(X, self.mean_, self.std_) @ self.coef_ + self.intercept_


class RidgeProbe(_Probe):
    """Ridge regression in closed form; on classes, ridge on one-hot targets (argmax predicts).

    Args:
        alpha: the L2 penalty ``alpha * ||W||²`` (on standardized features).
    """

    def __init__(self, alpha: float = 1.0, seed: int = 0) -> None:
        self.alpha, self.seed = alpha, seed

    def fit(self, X: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> "RidgeProbe":
        Z = self._prep(X).double()
        self.regression_ = bool(y.dtype.is_floating_point)
        if self.regression_:
            T = y.double().unsqueeze(1)
        else:
            T = torch.nn.functional.one_hot(y, int(n_classes or int(y.max()) + 1)).double()
        t_mean = T.mean(0)
        n, d = Z.shape
        if d <= n:
            A = Z.T @ Z + self.alpha * torch.eye(d, dtype=Z.dtype)
            W = torch.linalg.solve(A, Z.T @ (T - t_mean))
        else:   # the dual form is cheaper with fewer examples than features
            A = Z @ Z.T + self.alpha * torch.eye(n, dtype=Z.dtype)
            W = Z.T @ torch.linalg.solve(A, T - t_mean)
        self.coef_, self.intercept_ = W.float(), t_mean.float()
        if not self.regression_:
            # Ridge scores are not probabilities: pick the softmax temperature that gives the
            # training labels the highest likelihood, so MDL codelengths are meaningful.
            scores = self.decision(X)
            grid = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
            nll = [float(torch.nn.functional.cross_entropy(scores * t, y)) for t in grid]
            self.temperature_ = grid[min(range(len(grid)), key=nll.__getitem__)]
        return self

    def decision(self, X: torch.Tensor) -> torch.Tensor:
        return _standardize(X, self.mean_, self.std_) @ self.coef_ + self.intercept_

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """``[n, classes]``: a softmax of the ridge scores at the temperature fitted in ``fit``."""
        return torch.softmax(self.decision(X) * self.temperature_, dim=-1)


class MLPProbe(_Probe):
    """One hidden layer (ReLU) trained with Adam; classification or regression.

    Args:
        hidden: hidden width.
        epochs: passes over the training set.
        lr: Adam learning rate.
        weight_decay: L2 penalty.
        batch_size: examples per step.
        seed: initialization and shuffling.
    """

    def __init__(self, hidden: int = 128, epochs: int = 60, lr: float = 3e-3, weight_decay: float = 1e-4,
                 batch_size: int = 256, seed: int = 0) -> None:
        self.hidden, self.epochs, self.lr, self.weight_decay = hidden, epochs, lr, weight_decay
        self.batch_size, self.seed = batch_size, seed

    def fit(self, X: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> "MLPProbe":
        Z = self._prep(X)
        self.regression_ = bool(y.dtype.is_floating_point)
        k = 1 if self.regression_ else int(n_classes or int(y.max()) + 1)
        g = torch.Generator().manual_seed(self.seed)
        d = Z.shape[1]
        W1 = (torch.randn(d, self.hidden, generator=g) / math.sqrt(d)).requires_grad_()
        b1 = torch.zeros(self.hidden, requires_grad=True)
        W2 = (torch.randn(self.hidden, k, generator=g) / math.sqrt(self.hidden)).requires_grad_()
        b2 = torch.zeros(k, requires_grad=True)
        if self.regression_:
            self.y_mean_, self.y_std_ = float(y.mean()), float(y.std().clamp_min(1e-6)) if len(y) > 1 else 1.0
            target = (y.float() - self.y_mean_) / self.y_std_
        else:
            target = y
        params = [W1, b1, W2, b2]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        n = Z.shape[0]
        with torch.enable_grad(), one_thread():
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=g)
                for s in range(0, n, self.batch_size):
                    idx = order[s:s + self.batch_size]
                    out = torch.relu(Z[idx] @ W1 + b1) @ W2 + b2
                    if self.regression_:
                        loss = ((out.squeeze(-1) - target[idx]) ** 2).mean()
                    else:
                        loss = torch.nn.functional.cross_entropy(out, target[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        self.params_ = [p.detach() for p in params]
        return self

    def decision(self, X: torch.Tensor) -> torch.Tensor:
        W1, b1, W2, b2 = self.params_
        out = torch.relu(_standardize(X, self.mean_, self.std_) @ W1 + b1) @ W2 + b2
        if self.regression_:
            return out * self.y_std_ + self.y_mean_
        return out


PROBES = {"logistic": LogisticProbe, "ridge": RidgeProbe, "mlp": MLPProbe}


def make_probe(probe: str | _Probe, seed: int = 0) -> _Probe:
    """A probe from its name (``"logistic"``, ``"ridge"``, ``"mlp"``) or a configured instance."""
    if isinstance(probe, _Probe):
        return probe
    if probe not in PROBES:
        raise ProbingError(f"Unknown probe {probe!r}; use one of {sorted(PROBES)} or a probe instance.")
    return PROBES[probe](seed=seed)


def clone(probe: _Probe) -> _Probe:
    """A fresh unfitted probe with the same settings."""
    return type(probe)(**probe.get_params())


# ---------------------------------------------------------------------------- metrics
def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``pred == y``."""
    return float((pred == y).float().mean()) if len(y) else float("nan")


def macro_f1(pred: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y`` or ``pred``."""
    classes = torch.unique(torch.cat([pred, y]))
    f1s = []
    for c in classes:
        tp = float(((pred == c) & (y == c)).sum())
        fp = float(((pred == c) & (y != c)).sum())
        fn = float(((pred != c) & (y == c)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s) if f1s else float("nan")


def r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``."""
    y = y.double()
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = float(((y - pred.double()) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
