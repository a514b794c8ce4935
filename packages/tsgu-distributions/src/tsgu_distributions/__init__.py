"""tsgu-distributions: SparseMultivariateNormal and its statistical tests.

The package is installable and versioned with the rest of tsgu; its public API is being built
(see the project's issue tracker) and is not part of this release yet.
"""

from ._version import __version__

__all__ = ["__version__"]
