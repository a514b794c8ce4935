"""A corpus of real sparse matrices that nobody on this project wrote, for tests.

The matrices come from pyamg's gallery and bundled examples (finite-element and discontinuous
Galerkin matrices of published test problems) and from scikit-fem assemblies (P1/P2 Laplace,
linear elasticity, stiffness plus mass on triangle and tetrahedron meshes, boundary conditions
condensed out).  pyamg and scikit-fem are *test* dependencies (extra ``tsgu-ops[corpus]``), never
runtime ones; they are imported when the corpus is built.

``real_matrices("small")`` is sized for CI (every matrix at most a few thousand unknowns);
``real_matrices("large")`` (the ``fuzz`` session) goes up to ~25k unknowns.  Every entry is a
:class:`RealMatrix` holding the SciPy CSR matrix (float64, sorted indices, no explicit zeros) and
what is known of it (symmetric, positive definite), so a test can pick the solvers that apply.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class RealMatrix:
    """One matrix of the corpus.

    Attributes
    ----------
    name : str
        Where it comes from (``"pyamg:bar"``, ``"skfem:p1-tri-laplace"``, ...).
    matrix : scipy.sparse.csr_matrix
        float64, square, sorted indices, duplicates summed.
    symmetric : bool
        Symmetric to rounding (``|A - Aᵀ| <= 1e-10 |A|``).
    spd : bool
        Symmetric positive definite (known from the discretisation).
    """

    name: str
    matrix: Any
    symmetric: bool
    spd: bool

    @property
    def n(self) -> int:
        return int(self.matrix.shape[0])

    def torch(
        self,
        layout: torch.layout = torch.sparse_csr,
        dtype: torch.dtype = torch.float64,
        index_dtype: torch.dtype = torch.int64,
    ) -> torch.Tensor:
        """The matrix as a torch sparse tensor (COO coalesced, or CSR) with the given dtypes."""
        A = self.matrix
        if layout == torch.sparse_csr:
            return torch.sparse_csr_tensor(
                torch.from_numpy(A.indptr.astype("int64")).to(index_dtype),
                torch.from_numpy(A.indices.astype("int64")).to(index_dtype),
                torch.from_numpy(A.data).to(dtype),
                A.shape,
            )
        coo = A.tocoo()
        idx = torch.stack(
            [torch.from_numpy(coo.row.astype("int64")), torch.from_numpy(coo.col.astype("int64"))]
        )
        return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data).to(dtype), A.shape).coalesce()


def _clean(A: Any) -> Any:
    import scipy.sparse as sp

    A = sp.csr_matrix(A, dtype="float64")
    A.sum_duplicates()
    A.eliminate_zeros()
    A.sort_indices()
    return A


def _entry(name: str, A: Any, spd: bool) -> RealMatrix:
    A = _clean(A)
    asym = abs(A - A.T).max() if A.nnz else 0.0
    scale = abs(A).max() if A.nnz else 1.0
    return RealMatrix(name, A, symmetric=bool(asym <= 1e-10 * scale), spd=spd)


def _pyamg_entries(size: str) -> list[RealMatrix]:
    from pyamg import gallery

    out = []
    # Bundled example matrices (FEM of published problems).  local_disc_galerkin_diffusion is
    # SPD but symmetric to ~1e-12 only; it is kept as stored.
    for name, spd in (
        ("airfoil", True),
        ("bar", True),
        ("knot", True),
        ("recirc_flow", False),
        ("local_disc_galerkin_diffusion", True),
    ):
        out.append(_entry(f"pyamg:{name}", gallery.load_example(name)["A"], spd))
    k = 24 if size == "small" else 120
    out.append(_entry(f"pyamg:poisson-{k}x{k}", gallery.poisson((k, k), format="csr"), True))
    stencil = gallery.diffusion_stencil_2d(epsilon=0.01, theta=0.6, type="FE")
    out.append(
        _entry(f"pyamg:aniso-rotated-{k}x{k}", gallery.stencil_grid(stencil, (k, k), format="csr"), True)
    )
    e = 12 if size == "small" else 60
    out.append(_entry(f"pyamg:elasticity-{e}x{e}", gallery.linear_elasticity((e, e), format="csr")[0], True))
    return out


def _skfem_entries(size: str) -> list[RealMatrix]:
    import skfem
    from skfem.models.elasticity import lame_parameters, linear_elasticity
    from skfem.models.poisson import laplace, mass

    def condensed(K: Any, basis: Any) -> Any:
        interior = basis.complement_dofs(basis.get_dofs())
        return K[interior][:, interior]

    r_tri = 4 if size == "small" else 6
    r_tet = 3 if size == "small" else 4
    out = []
    mesh = skfem.MeshTri().refined(r_tri)
    for elem, tag in ((skfem.ElementTriP1(), "p1"), (skfem.ElementTriP2(), "p2")):
        basis = skfem.Basis(mesh, elem)
        out.append(_entry(f"skfem:{tag}-tri-laplace", condensed(laplace.assemble(basis), basis), True))
    basis = skfem.Basis(mesh, skfem.ElementVector(skfem.ElementTriP1()))
    K = linear_elasticity(*lame_parameters(1.0, 0.3)).assemble(basis)
    out.append(_entry("skfem:p1-tri-elasticity", condensed(K, basis), True))
    tet = skfem.MeshTet().refined(r_tet)
    basis = skfem.Basis(tet, skfem.ElementTetP1())
    KM = laplace.assemble(basis) + mass.assemble(basis)
    out.append(_entry("skfem:p1-tet-stiffness+mass", KM, True))
    out.append(_entry("skfem:p1-tet-laplace", condensed(laplace.assemble(basis), basis), True))
    return out


@functools.lru_cache(maxsize=2)
def _build(size: str) -> tuple[RealMatrix, ...]:
    return tuple(_pyamg_entries(size) + _skfem_entries(size))


def real_matrices(size: str = "small") -> tuple[RealMatrix, ...]:
    """The real-matrix corpus (built once per process and size).

    Parameters
    ----------
    size : {"small", "large"}
        ``"small"`` keeps every matrix at CI size (≤ ~3k unknowns); ``"large"`` refines the
        generated ones (up to ~25k unknowns).

    Returns
    -------
    tuple of RealMatrix

    Raises
    ------
    ValueError
        For another ``size``.
    ImportError
        When pyamg or scikit-fem is missing (``pip install 'tsgu-ops[corpus]'``).

    Examples
    --------
    >>> from tsgu_ops.testing import real_matrices  # doctest: +SKIP
    >>> [m.name for m in real_matrices()][:2]  # doctest: +SKIP
    ['pyamg:airfoil', 'pyamg:bar']
    """
    if size not in ("small", "large"):
        raise ValueError(f"size must be 'small' or 'large', got {size!r}")
    try:
        import pyamg  # noqa: F401
        import skfem  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the test extras install both
        raise ImportError(
            "the real-matrix corpus needs pyamg and scikit-fem: pip install 'tsgu-ops[corpus]'"
        ) from exc
    return _build(size)
