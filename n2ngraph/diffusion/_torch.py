"""torch engine: the Lanczos algorithm of ``_krylov`` on a torch sparse CSR Laplacian.

Same algorithm, same a posteriori error bound; matvecs, reorthogonalisation and the final
combination run on ``device`` (CUDA when available), in float64. The small tridiagonal
eigenproblem stays on the CPU. torch is imported only when this engine runs.
"""

from __future__ import annotations

import warnings

import numpy as np

from n2ngraph.diffusion._krylov import DEFAULT_BASIS_BYTES, Lanczos, _run_to_tolerance, basis_steps

__all__ = ["TorchBackend", "default_device", "torch_engine"]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchBackend:
    """Lanczos vector operations on torch tensors (float64) on one device."""

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
        denom = np.bincount(problem.labels, weights=problem.null**2, minlength=problem.n_components)
        self.denom = torch.from_numpy(denom).to(self.device)
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


def torch_engine(problem, v: np.ndarray, times: np.ndarray, *, rtol: float, v0_norm: float,
                 device=None, max_steps: int | None = None,
                 max_basis_bytes: float = DEFAULT_BASIS_BYTES):
    """``exp(-t L) v`` for sorted positive finite ``times`` on ``device``, shape ``(T, n)``."""
    steps = basis_steps(problem.n, max_basis_bytes) if max_steps is None else int(max_steps)
    lz = Lanczos(TorchBackend(problem, device), v, steps)
    ok = _run_to_tolerance(lz, times, v0_norm, rtol)
    return lz.evaluate(times), lz, ok
