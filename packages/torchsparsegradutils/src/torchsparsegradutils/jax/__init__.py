"""0.2.7 path ``torchsparsegradutils.jax`` (re-exports tsgu-bridges; always importable).

With JAX installed it exposes the converters and ``sparse_solve_j4t``; without, it warns once,
sets ``have_jax = False`` and defines nothing else.  Availability is checked without importing JAX.
"""

import importlib.util
import warnings

have_jax: bool = importlib.util.find_spec("jax") is not None

if have_jax:
    # through the 0.2.7 submodules, which thereby become attributes of this package
    from . import jax_bindings as jax_bindings
    from . import jax_sparse_solve as jax_sparse_solve
    from .jax_bindings import j2t, j2t_coo, j2t_csr, spmm_t4j, t2j, t2j_coo, t2j_csr
    from .jax_sparse_solve import sparse_solve_j4t

    __all__ = ["j2t", "t2j", "spmm_t4j", "j2t_coo", "t2j_coo", "j2t_csr", "t2j_csr", "sparse_solve_j4t"]
else:
    warnings.warn(
        "torchsparsegradutils.jax depends on jax but jax couldn't be imported: "
        "the JAX bridge is unavailable (pip install torchsparsegradutils[jax]).",
        UserWarning,
        stacklevel=2,
    )
