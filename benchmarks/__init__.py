"""The tsgu benchmark suite: ``python -m benchmarks`` (see ``--help``)."""
