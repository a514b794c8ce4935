"""Constraints of sparse parameters (the 0.2.7 module was an empty placeholder).

``SparseMultivariateNormal`` checks its sparse factor itself when ``validate_args=True``
(triangularity, a stored positive diagonal for LLᵀ factors, no stored diagonal for LDLᵀ ones); this
module is kept so that ``torchsparsegradutils.distributions.constraints`` still imports.
"""

__all__: list[str] = []
