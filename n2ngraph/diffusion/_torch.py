"""torch backend of the Lanczos driver: ``_krylov.lanczos_legs`` on a torch sparse CSR Laplacian.

Same algorithm, same a posteriori error bound (the ``torch`` engine is ``lanczos_legs`` with
``backend=TorchBackend``); matvecs, reorthogonalisation and the final combination run on
``device`` (CUDA when available), in float64. The small tridiagonal eigenproblem stays on the
CPU. torch is imported only when this backend is built.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["TorchBackend", "default_device"]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchBackend:
    """:class:`~n2ngraph.diffusion._krylov.KrylovBackend` on torch tensors (float64) on one
    device."""

    def __init__(self, problem, device=None):
        import torch

        self.torch = torch
        self.problem = problem
        self.device = torch.device(device or default_device())
        L = problem.L
        with warnings.catch_warnings():  # "sparse CSR support is in beta" notices
            warnings.simplefilter("ignore")
            self.L = torch.sparse_csr_tensor(
                torch.from_numpy(L.indptr.astype(np.int64)),
                torch.from_numpy(L.indices.astype(np.int64)),
                torch.from_numpy(L.data),
                size=L.shape,
                dtype=torch.float64,
                check_invariants=False,
            ).to(self.device)
        self.labels = torch.from_numpy(problem.labels.astype(np.int64)).to(self.device)
        self.u = torch.from_numpy(problem.null).to(self.device)
        self.denom = torch.from_numpy(problem.null_norms2).to(self.device)
        self.k = problem.n_components

    def alloc(self, cap: int, n: int):
        self.V = self.torch.empty((cap, n), dtype=self.torch.float64, device=self.device)

    def vec(self, x):
        return self.torch.as_tensor(np.asarray(x, np.float64)).to(self.device)

    def matvec(self, x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return (self.L @ x.unsqueeze(1)).squeeze(1)

    def project(self, x):
        coef = self.torch.zeros(self.k, dtype=x.dtype, device=self.device)
        coef.index_add_(0, self.labels, self.u * x)
        coef /= self.denom
        return x - coef[self.labels] * self.u

    def set(self, j, x):
        self.V[j] = x

    def get(self, j):
        return self.V[j]

    def dot(self, x, y) -> float:
        return float(self.torch.dot(x, y))

    def norm(self, x) -> float:
        return float(self.torch.linalg.vector_norm(x))

    def reorth(self, w, j):
        Vj = self.V[: j + 1]
        for _ in range(2):
            w = w - (Vj @ w) @ Vj
        return w

    def combine(self, C: np.ndarray) -> np.ndarray:
        Ct = self.torch.from_numpy(np.ascontiguousarray(C)).to(self.device)
        return (Ct @ self.V[: C.shape[1]]).cpu().numpy()
