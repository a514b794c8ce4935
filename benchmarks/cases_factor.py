"""SuperLU factor time of the SciPy bridge's default direct solve, per real-matrix corpus matrix.

One case per matrix of ``tsgu_ops.testing.real_matrices`` (pyamg examples and gallery, scikit-fem
assemblies): the ordering and pivoting ``sparse_solve_c4t`` chooses against SciPy's default
(COLAMD, partial pivoting) and minimum degree on ``A + Aᵀ`` with partial pivoting, plus the
bridge's whole forward and backward pass.  The quick run takes one small matrix; ``--full`` the
large corpus (up to 16k unknowns) and a 24k-unknown P1 tetrahedron Laplacian (scikit-fem
``MeshTet().refined(5)``), where the minimum-degree variant is left out (too slow there; see
docs/benchmarks.md).  Each variant's note gives the fill-in ``nnz(L + U) / nnz(A)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from ._core import Case, Run, Variant, _backward_sum

QUICK = ("skfem:p2-tri-laplace",)
TET_24K = "skfem:p1-tet-laplace-24k"
# real_matrices("large"), listed so that listing the cases does not build the corpus
FULL = (
    "pyamg:airfoil",
    "pyamg:bar",
    "pyamg:knot",
    "pyamg:recirc_flow",
    "pyamg:local_disc_galerkin_diffusion",
    "pyamg:poisson-120x120",
    "pyamg:aniso-rotated-120x120",
    "pyamg:elasticity-60x60",
    "skfem:p1-tri-laplace",
    "skfem:p2-tri-laplace",
    "skfem:p1-tri-elasticity",
    "skfem:p1-tet-stiffness+mass",
    "skfem:p1-tet-laplace",
    TET_24K,
)


@functools.lru_cache(maxsize=1)
def _tet_24k() -> Any:
    import skfem
    from skfem.models.poisson import laplace

    basis = skfem.Basis(skfem.MeshTet().refined(5), skfem.ElementTetP1())
    interior = basis.complement_dofs(basis.get_dofs())
    return laplace.assemble(basis)[interior][:, interior].tocsr()


def _corpus_matrix(name: str, full: bool) -> Any:
    if name == TET_24K:
        return _tet_24k()
    from tsgu_ops.testing import real_matrices

    corpus = {m.name: m.matrix for m in real_matrices("large" if full else "small")}
    if name not in corpus:
        raise KeyError(f"{name} is not in the corpus any more: update benchmarks/cases_factor.py")
    return corpus[name]


def _structurally_symmetric(A: Any) -> bool:
    P = (A != 0).astype("int8")
    return (P != P.T).nnz == 0


def factor_variant(name: str, full: bool, ordering: str) -> Callable[[dict[str, Any]], Run]:
    """``ordering``: "tsgu" (the bridge's choice), "colamd" (SciPy's default), "mmd" (previous)."""

    def setup(ctx: dict[str, Any]) -> Run:
        import scipy.sparse.linalg as sla

        from tsgu_bridges.cupy_sparse_solve import _superlu_options

        A = _corpus_matrix(name, full).tocsc()
        opts = {
            "tsgu": _superlu_options(_structurally_symmetric(A), {}),
            "colamd": {"permc_spec": "COLAMD"},
            "mmd": {"permc_spec": "MMD_AT_PLUS_A"},
        }[ordering]
        lu = sla.splu(A, **opts)
        meta = {"nnz": A.nnz, "rows": A.shape[0], "dtype": "float64", "layout": "csc"}
        meta["note"] = f"fill {(lu.L.nnz + lu.U.nnz) / A.nnz:.1f}x, {opts}"
        return Run(lambda: sla.splu(A, **opts), None, meta)

    return setup


def bridge_variant(name: str, full: bool) -> Callable[[dict[str, Any]], Run]:
    """``sparse_solve_c4t`` forward (conversion, symmetry test, factor, solve) and backward."""

    def setup(ctx: dict[str, Any]) -> Run:
        from tsgu_bridges import sparse_solve_c4t

        M = _corpus_matrix(name, full)
        A = torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype("int64")),
            torch.from_numpy(M.indices.astype("int64")),
            torch.from_numpy(M.data),
            M.shape,
        ).requires_grad_()
        b = torch.randn(M.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        meta = {"nnz": M.nnz, "rows": M.shape[0], "dtype": "float64", "layout": "csr", "note": "1 rhs"}
        return Run(lambda: sparse_solve_c4t(A, b), lambda out: _backward_sum(out, A), meta)

    return setup


def factor_cases(full: bool = False) -> list[Case]:
    cases = []
    for name in FULL if full else QUICK:
        key = name.split(":", 1)[1].replace("-", "_").replace("+", "_")
        variants = [
            Variant("sparse_solve_c4t ordering", factor_variant(name, full, "tsgu"), library="tsgu"),
            Variant("SciPy splu default (COLAMD)", factor_variant(name, full, "colamd"), baseline=True),
        ]
        if name != TET_24K and full:
            mmd = factor_variant(name, full, "mmd")
            variants.append(Variant("MMD_AT_PLUS_A, partial pivoting (previous)", mmd, library="SciPy"))
        variants.append(
            Variant("sparse_solve_c4t forward + backward", bridge_variant(name, full), library="tsgu")
        )
        cases.append(
            Case(
                f"superlu_factor_{key}",
                "SuperLU factor (sparse_solve_c4t)",
                name,
                variants,
                family="direct solves",
            )
        )
    return cases
