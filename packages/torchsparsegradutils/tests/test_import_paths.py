"""The 0.2.7 import paths that exist so far re-export the tsgu objects (no logic of their own)."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest
import torch

import tsgu_indexed
import tsgu_ops


def test_top_level_names_are_the_tsgu_objects():
    import torchsparsegradutils as t
    import tsgu_krylov

    assert t.sparse_generic_solve is tsgu_krylov.sparse_generic_solve
    assert t.sparse_generic_lstsq is tsgu_krylov.sparse_generic_lstsq
    assert t.utils.linear_cg is tsgu_krylov.linear_cg and t.utils.lsmr is tsgu_krylov.lsmr

    assert t.sparse_mm is tsgu_ops.sparse_mm
    assert t.sparse_triangular_solve is tsgu_ops.sparse_triangular_solve
    assert t.sparse_logsumexp is tsgu_ops.sparse_logsumexp
    assert t.sparse_bidir_logsumexp is tsgu_ops.sparse_bidir_logsumexp
    assert t.segment_mm is tsgu_indexed.segment_mm and t.gather_mm is tsgu_indexed.gather_mm
    assert t.__version__ == tsgu_ops.__version__
    for name in t.__all__:
        assert callable(getattr(t, name))


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("torchsparsegradutils.sparse_matmul", ["sparse_mm", "SparseMatMul"]),
        (
            "torchsparsegradutils.sparse_solve",
            [
                "sparse_triangular_solve",
                "SparseTriangularSolve",
                "sparse_generic_solve",
                "SparseGenericSolve",
            ],
        ),
        ("torchsparsegradutils.sparse_lstsq", ["sparse_generic_lstsq", "SparseGenericLstsq"]),
        ("torchsparsegradutils.utils.linear_cg", ["linear_cg", "LinearCGSettings", "CGInfo"]),
        ("torchsparsegradutils.utils.minres", ["minres", "MINRESSettings"]),
        ("torchsparsegradutils.utils.bicgstab", ["bicgstab", "BICGSTABSettings"]),
        ("torchsparsegradutils.utils.lsmr", ["lsmr"]),
        ("torchsparsegradutils.encoders", ["PairwiseEncoder", "calc_pairwise_coo_indices_nd"]),
        (
            "torchsparsegradutils.distributions",
            ["SparseMultivariateNormal", "SparseMultivariateNormalNative"],
        ),
        (
            "torchsparsegradutils.distributions.sparse_multivariate_normal",
            ["SparseMultivariateNormal", "SparseMultivariateNormalNative", "_batch_sparse_mv"],
        ),
        ("torchsparsegradutils.distributions.constraints", []),
        ("torchsparsegradutils.utils.dist_stats_helpers", ["mean_hotelling_t2_test", "cov_nagao_test"]),
        (
            "torchsparsegradutils.encoders.pairwise_encoder",
            [
                "PairwiseEncoder",
                "calc_pairwise_coo_indices_nd",
                "calc_pairwise_coo_indices",
                "calc_pariwise_coo_indices",
                "_trim_nd",
                "_gen_coords_nd",
                "_gen_coords",
                "_gen_offsets_nd",
                "_gen_offsets",
            ],
        ),
        (
            "torchsparsegradutils.encoders.pairwise_voxel_encoder",
            ["PairwiseVoxelEncoder", "PairwiseEncoder", "calc_pairwise_coo_indices_nd", "_trim_nd"],
        ),
        (
            "torchsparsegradutils.sparse_logsumexp",
            [
                "sparse_logsumexp",
                "sparse_bidir_logsumexp",
                "_scatter_logsumexp",
                "_row_col_val",
                "_logsumexp_2d",
                "_logsumexp_batched",
                "_bidir_2d",
                "_bidir_batched",
            ],
        ),
        ("torchsparsegradutils.indexed_matmul", ["segment_mm", "gather_mm", "dgl_installed"]),
        ("torchsparsegradutils._compat", ["linalg_solve_triangular_compat"]),
        (
            "torchsparsegradutils.utils.utils",
            [
                "stack_csr",
                "convert_coo_to_csr_indices_values",
                "convert_coo_to_csr",
                "sparse_block_diag",
                "sparse_block_diag_split",
                "sparse_eye",
                "_sort_coo_indices",
                "_compress_row_indices",
                "_demcompress_crow_indices",
            ],
        ),
    ],
)
def test_module_paths(module, names):
    importlib.import_module(module)
    mod = sys.modules[module]  # the module itself (a same-named function may shadow the attribute)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name}"


def test_utils_all_matches_0_2_7_for_the_implemented_names():
    from torchsparsegradutils import utils

    assert {"rand_sparse", "rand_sparse_tri", "sparse_eye", "stack_csr", "sparse_block_diag"} <= set(
        utils.__all__
    )
    assert "make_spd_sparse" not in utils.__all__ and not hasattr(utils, "make_spd_sparse")
    solvers = ["linear_cg", "LinearCGSettings", "CGInfo", "minres", "MINRESSettings", "bicgstab"]
    assert {*solvers, "BICGSTABSettings", "lsmr"} <= set(utils.__all__)
    assert {"mean_hotelling_t2_test", "cov_nagao_test"} <= set(utils.__all__)
    assert callable(utils.cov_nagao_test) and callable(utils.mean_hotelling_t2_test)


def test_random_sparse_all_is_the_0_2_7_list():
    from torchsparsegradutils.utils import random_sparse

    assert random_sparse.__all__ == [
        "rand_sparse",
        "rand_sparse_tri",
        "make_spd_sparse",
        "generate_random_sparse_coo_matrix",
        "generate_random_sparse_csr_matrix",
        "generate_random_sparse_strictly_triangular_coo_matrix",
        "generate_random_sparse_strictly_triangular_csr_matrix",
        "generate_random_sparse_triangular_coo_matrix",
        "generate_random_sparse_triangular_csr_matrix",
    ]


def test_import_does_not_load_optional_backends():
    import subprocess

    code = (
        "import sys, torchsparsegradutils\n"
        "for m in ('torchsparsegradutils.cupy', 'torchsparsegradutils.jax', 'torchsparsegradutils.encoders',\n"
        "          'torchsparsegradutils.distributions', 'jax', 'cupy', 'tsgu_encoders', 'tsgu_distributions'):\n"
        "    assert m not in sys.modules, m\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_0_2_7_style_program_runs():
    from torchsparsegradutils import sparse_mm, sparse_triangular_solve
    from torchsparsegradutils.utils import rand_sparse_tri

    A = rand_sparse_tri(
        (10, 10), 20, torch.sparse_csr, upper=False, well_conditioned=True, values_dtype=torch.float64
    ).requires_grad_()
    B = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    X = sparse_triangular_solve(A, sparse_mm(A, B), upper=False)
    X.sum().backward()
    torch.testing.assert_close(X, B)
    assert A.grad.layout == torch.sparse_csr


def test_encoders_serve_deprecated_names_lazily_with_warnings():
    import warnings

    import torchsparsegradutils.encoders as enc
    import tsgu_encoders

    assert enc.__all__ == ["PairwiseEncoder", "calc_pairwise_coo_indices_nd"]
    assert enc.PairwiseEncoder is tsgu_encoders.PairwiseEncoder
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enc.PairwiseVoxelEncoder.__name__ == "PairwiseVoxelEncoder"
        from torchsparsegradutils.encoders.pairwise_encoder import calc_pairwise_coo_indices  # noqa: F401
    with pytest.warns(DeprecationWarning):
        enc.calc_pariwise_coo_indices
    with pytest.raises(AttributeError, match=r"module 'torchsparsegradutils\.encoders' has no attribute 'x'"):
        enc.x


def test_cupy_and_jax_bridges_import_under_their_0_2_7_paths():
    import tsgu_bridges

    cp = importlib.import_module("torchsparsegradutils.cupy")
    assert cp.sparse_solve_c4t is tsgu_bridges.sparse_solve_c4t
    assert cp.__all__ == [
        "c2t_coo",
        "t2c_coo",
        "c2t_csr",
        "t2c_csr",
        "_get_array_modules",
        "_torch_to_backend",
        "_backend_to_torch",
        "sparse_solve_c4t",
    ]
    assert isinstance(cp.have_cupy, bool)
    assert hasattr(importlib.import_module("torchsparsegradutils.cupy.cupy_sparse_solve"), "SparseSolveC4T")
    assert hasattr(importlib.import_module("torchsparsegradutils.cupy.cupy_bindings"), "t2c_csr")
    jx = importlib.import_module("torchsparsegradutils.jax")
    if jx.have_jax:
        assert set(jx.__all__) == {
            "j2t",
            "t2j",
            "spmm_t4j",
            "j2t_coo",
            "t2j_coo",
            "j2t_csr",
            "t2j_csr",
            "sparse_solve_j4t",
        }
        assert hasattr(importlib.import_module("torchsparsegradutils.jax.jax_sparse_solve"), "SparseSolveJ4T")
        assert hasattr(importlib.import_module("torchsparsegradutils.jax.jax_bindings"), "t2j")


@pytest.mark.parametrize(
    ("package", "attributes"),
    [
        ("torchsparsegradutils.cupy", ["cupy_bindings", "cupy_sparse_solve"]),
        ("torchsparsegradutils.jax", ["jax_bindings", "jax_sparse_solve"]),
        ("torchsparsegradutils.distributions", ["sparse_multivariate_normal"]),
        ("torchsparsegradutils.encoders", ["pairwise_encoder"]),
        ("torchsparsegradutils.utils", ["dist_stats_helpers"]),
    ],
)
def test_submodules_are_attributes_of_their_package_right_after_import(package, attributes):
    """As in 0.2.7, ``import torchsparsegradutils.cupy`` makes ``.cupy_bindings`` reachable (a fresh
    interpreter, so that no other test has imported the submodule first)."""
    import subprocess

    if package.endswith(".jax") and importlib.util.find_spec("jax") is None:
        pytest.skip("the JAX submodules exist only with jax installed (as in 0.2.7)")
    code = (
        "import importlib, types, warnings\n"
        "warnings.simplefilter('ignore')\n"
        f"pkg = importlib.import_module({package!r})\n"
        f"for name in {attributes!r}:\n"
        "    value = getattr(pkg, name)\n"
        "    assert isinstance(value, types.ModuleType), (name, value)\n"
        "    assert value.__name__ == pkg.__name__ + '.' + name, value.__name__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_native_distribution_has_class_level_loc_and_scale_tril():
    from torchsparsegradutils.distributions import SparseMultivariateNormalNative

    assert isinstance(SparseMultivariateNormalNative.loc, property)
    assert isinstance(SparseMultivariateNormalNative.scale_tril, property)
    L = torch.tensor([[2.0, 0.0], [0.5, 1.0]], dtype=torch.float64).to_sparse_csr()
    loc = torch.tensor([1.0, -1.0], dtype=torch.float64)
    dist = SparseMultivariateNormalNative(loc, L)
    assert dist.loc is loc and dist.scale_tril is L
