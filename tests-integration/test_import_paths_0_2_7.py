"""Every import path of torchsparsegradutils 0.2.7 (spec §0.1), with its ``__all__``, on the installed wheels."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import warnings

import pytest

ALL = {
    "torchsparsegradutils": [
        "sparse_mm",
        "gather_mm",
        "segment_mm",
        "sparse_triangular_solve",
        "sparse_generic_solve",
        "sparse_generic_lstsq",
        "sparse_logsumexp",
        "sparse_bidir_logsumexp",
    ],
    "torchsparsegradutils.sparse_logsumexp": ["sparse_logsumexp", "sparse_bidir_logsumexp"],
    "torchsparsegradutils.utils": [
        "linear_cg",
        "LinearCGSettings",
        "CGInfo",
        "minres",
        "MINRESSettings",
        "bicgstab",
        "BICGSTABSettings",
        "lsmr",
        "convert_coo_to_csr_indices_values",
        "convert_coo_to_csr",
        "sparse_block_diag",
        "rand_sparse",
        "rand_sparse_tri",
        "sparse_block_diag_split",
        "stack_csr",
        "sparse_eye",
        "mean_hotelling_t2_test",
        "cov_nagao_test",
    ],
    "torchsparsegradutils.utils.random_sparse": [
        "rand_sparse",
        "rand_sparse_tri",
        "make_spd_sparse",
        "generate_random_sparse_coo_matrix",
        "generate_random_sparse_csr_matrix",
        "generate_random_sparse_strictly_triangular_coo_matrix",
        "generate_random_sparse_strictly_triangular_csr_matrix",
        "generate_random_sparse_triangular_coo_matrix",
        "generate_random_sparse_triangular_csr_matrix",
    ],
    "torchsparsegradutils.utils.dist_stats_helpers": ["mean_hotelling_t2_test", "cov_nagao_test"],
    "torchsparsegradutils.distributions": ["SparseMultivariateNormal", "SparseMultivariateNormalNative"],
    "torchsparsegradutils.distributions.sparse_multivariate_normal": [
        "SparseMultivariateNormal",
        "SparseMultivariateNormalNative",
    ],
    "torchsparsegradutils.encoders": ["PairwiseEncoder", "calc_pairwise_coo_indices_nd"],
    "torchsparsegradutils.cupy": [
        "c2t_coo",
        "t2c_coo",
        "c2t_csr",
        "t2c_csr",
        "_get_array_modules",
        "_torch_to_backend",
        "_backend_to_torch",
        "sparse_solve_c4t",
    ],
}

NAMES = {
    "torchsparsegradutils.sparse_matmul": ["sparse_mm", "SparseMatMul"],
    "torchsparsegradutils.sparse_solve": [
        "sparse_triangular_solve",
        "SparseTriangularSolve",
        "sparse_generic_solve",
        "SparseGenericSolve",
    ],
    "torchsparsegradutils.sparse_lstsq": ["sparse_generic_lstsq", "SparseGenericLstsq"],
    "torchsparsegradutils.sparse_logsumexp": [
        "_scatter_logsumexp",
        "_row_col_val",
        "_logsumexp_2d",
        "_logsumexp_batched",
        "_bidir_2d",
        "_bidir_batched",
    ],
    "torchsparsegradutils.indexed_matmul": ["segment_mm", "gather_mm", "dgl_installed"],
    "torchsparsegradutils._compat": ["linalg_solve_triangular_compat"],
    "torchsparsegradutils.utils.linear_cg": ["linear_cg", "LinearCGSettings", "CGInfo"],
    "torchsparsegradutils.utils.minres": ["minres", "MINRESSettings"],
    "torchsparsegradutils.utils.bicgstab": ["bicgstab", "BICGSTABSettings"],
    "torchsparsegradutils.utils.lsmr": ["lsmr"],
    "torchsparsegradutils.utils.utils": [
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
    "torchsparsegradutils.distributions.sparse_multivariate_normal": ["_batch_sparse_mv"],
    "torchsparsegradutils.distributions.constraints": [],
    "torchsparsegradutils.encoders.pairwise_encoder": [
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
    "torchsparsegradutils.encoders.pairwise_voxel_encoder": ["PairwiseVoxelEncoder", "PairwiseEncoder"],
    "torchsparsegradutils.cupy.cupy_bindings": ["c2t_coo", "t2c_coo", "c2t_csr", "t2c_csr"],
    "torchsparsegradutils.cupy.cupy_sparse_solve": ["sparse_solve_c4t", "SparseSolveC4T"],
}


def _module(path: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cupy/jax paths warn when their backend is missing
        importlib.import_module(path)
    return sys.modules[path]


@pytest.mark.parametrize("path", sorted(ALL))
def test_all_lists_are_those_of_0_2_7(path):
    mod = _module(path)
    assert sorted(mod.__all__) == sorted(ALL[path])
    for name in mod.__all__:
        assert hasattr(mod, name), f"{path}.{name}"


@pytest.mark.parametrize("path", sorted(NAMES))
def test_module_paths_hold_their_names(path):
    mod = _module(path)
    for name in NAMES[path]:
        assert hasattr(mod, name), f"{path}.{name}"


def test_jax_path_with_or_without_jax():
    mod = _module("torchsparsegradutils.jax")
    assert mod.have_jax == (importlib.util.find_spec("jax") is not None)
    if mod.have_jax:
        assert sorted(mod.__all__) == sorted(
            ["j2t", "t2j", "spmm_t4j", "j2t_coo", "t2j_coo", "j2t_csr", "t2j_csr", "sparse_solve_j4t"]
        )
        assert hasattr(_module("torchsparsegradutils.jax.jax_sparse_solve"), "SparseSolveJ4T")
    else:
        with pytest.raises(ImportError):
            importlib.import_module("torchsparsegradutils.jax.jax_bindings")


def test_import_side_effects_of_0_2_7():
    code = (
        "import sys, warnings\n"
        "import torchsparsegradutils\n"
        "for m in ('torchsparsegradutils.cupy', 'torchsparsegradutils.jax', 'torchsparsegradutils.encoders',\n"
        "          'torchsparsegradutils.distributions', 'cupy', 'jax'):\n"
        "    assert m not in sys.modules, m\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import torchsparsegradutils.cupy as c\n"
        "assert c.have_cupy or any('falling back to numpy' in str(x.message) for x in w)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
