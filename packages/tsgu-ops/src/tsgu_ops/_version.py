"""Version of the tsgu-ops distribution (kept equal to the repository's VERSION)."""

__version__ = "0.3.0.dev0"
