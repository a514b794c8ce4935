"""Version of the tsgu-cholesky distribution (kept equal to the repository's VERSION)."""

__version__ = "0.3.0.dev0"
