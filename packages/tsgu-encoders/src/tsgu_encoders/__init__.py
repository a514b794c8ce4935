"""tsgu-encoders: neighbourhood relations of nD volumes as sparse matrices.

:class:`PairwiseEncoder` turns per-offset values of a ``(C, *S)`` volume into a sparse ``(V, V)``
matrix (COO or CSR) with gradients that stay sparse; :func:`calc_pairwise_coo_indices_nd` gives
the (row, col) pairs of every offset.  :func:`tsgu_encoders.plot.plot_encoder` (extra ``[plot]``)
draws an encoder.  The deprecated 0.2.7 names (``PairwiseVoxelEncoder``,
``calc_pairwise_coo_indices``, ``calc_pariwise_coo_indices``) are served lazily with their warnings.
"""

from ._compat import deprecated_getattr
from ._version import __version__
from .offsets import calc_pairwise_coo_indices_nd
from .pairwise_encoder import PairwiseEncoder

__all__ = ["PairwiseEncoder", "__version__", "calc_pairwise_coo_indices_nd"]

__getattr__ = deprecated_getattr(__name__)
