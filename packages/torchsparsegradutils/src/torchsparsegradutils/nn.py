"""``torchsparsegradutils.nn``: sparse weights as dense parameters (re-exports :mod:`tsgu_ops.nn`).

New in the tsgu re-implementation (0.2.7 has no such module): :class:`SparseParameter` holds a
sparse matrix's pattern as buffers and its values as one dense ``nn.Parameter``, so that
``torch.compile``, ``torch.func``, DDP and FSDP work with it unchanged.
"""

from tsgu_ops.nn import SparseParameter

__all__ = ["SparseParameter"]
