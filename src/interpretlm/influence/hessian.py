"""K-FAC and EK-FAC approximations of the Hessian of the mean training loss, per linear layer.

For one layer with projected inputs ``a'`` and output gradients ``g'`` (see :mod:`.gradients`),
the Gauss-Newton / Fisher matrix of its (projected) weights ``F = E_n[vec(G_n) vec(G_n)^T]`` is
approximated as

* **K-FAC** (Martens & Grosse 2015): ``F ≈ A ⊗ S`` with ``A = sum_{n,t} a' a'^T / T`` (over the
  ``T`` real tokens) and ``S = sum_{n,t} g' g'^T / N`` (over the ``N`` examples), whose
  eigenvalues are ``λ_S[i] λ_A[j]`` in the eigenbasis ``Q_S ⊗ Q_A``;
* **EK-FAC** (George et al. 2018; Grosse et al. 2023): the same eigenbasis, with the eigenvalues
  refitted to the per-example gradients, ``Λ[i, j] = E_n[(Q_S^T G_n Q_A)[i, j]^2]``.

The damped inverse-Hessian-vector product of ``V: [k_out, k_in]`` is then
``Q_S ((Q_S^T V Q_A) / (Λ + λ)) Q_A^T`` with ``λ = damping × mean(Λ) + absolute_damping`` per layer (the relative
damping of Kronfluence's heuristic, plus e.g. the L2 coefficient the model was trained with): two small matrix products per side, never a
``k_out k_in × k_out k_in`` matrix.
"""

from __future__ import annotations

import torch


def eigenbasis(a_sum: torch.Tensor, g_sum: torch.Tensor, tokens: float, n: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Q_A [k_in, k_in], λ_A [k_in], Q_S [k_out, k_out], λ_S [k_out])`` of the covariances
    ``A = a_sum / tokens`` and ``S = g_sum / n`` (float64, eigenvalues clipped at 0)."""
    A, S = a_sum.double() / max(tokens, 1.0), g_sum.double() / max(n, 1)
    if not (torch.isfinite(A).all() and torch.isfinite(S).all()):
        # NaN/inf activations (an intervention, an overflow): let NaN reach the scores, where the
        # result's check fails and names the field, instead of eigh failing to converge
        nan = float("nan")
        return (torch.full_like(A, nan), torch.full(A.shape[:1], nan, dtype=A.dtype),
                torch.full_like(S, nan), torch.full(S.shape[:1], nan, dtype=S.dtype))
    lam_a, q_a = torch.linalg.eigh(A)
    lam_s, q_s = torch.linalg.eigh(S)
    return q_a, lam_a.clamp_min(0), q_s, lam_s.clamp_min(0)


def rotate(v: torch.Tensor, q_s: torch.Tensor, q_a: torch.Tensor) -> torch.Tensor:
    """``Q_S^T V Q_A`` for ``V: [..., k_out, k_in]``."""
    return q_s.T.to(v.dtype) @ v @ q_a.to(v.dtype)


def inverse_hvp(v: torch.Tensor, q_s: torch.Tensor, q_a: torch.Tensor, lam: torch.Tensor,
                damping: float, absolute: float = 0.0) -> torch.Tensor:
    """``(F + λ I)^{-1} vec(V)`` for ``V: [..., k_out, k_in]`` with ``F = (Q_A ⊗ Q_S) diag(Λ) (Q_A ⊗ Q_S)^T``
    and ``λ = damping × mean(Λ) + absolute`` (float64 in, float64 out).

    Example:
        >>> import torch
        >>> q = torch.eye(2, dtype=torch.float64)
        >>> lam = torch.tensor([[1.0, 3.0], [5.0, 7.0]], dtype=torch.float64)
        >>> inverse_hvp(torch.ones(2, 2, dtype=torch.float64), q, q, lam, 0.0)
        tensor([[1.0000, 0.3333],
                [0.2000, 0.1429]], dtype=torch.float64)
    """
    v = v.double()
    lam_abs = damping * float(lam.mean()) + absolute
    rot = rotate(v, q_s.double(), q_a.double()) / (lam.double() + lam_abs)
    return q_s.double() @ rot @ q_a.double().T
