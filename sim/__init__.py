"""The simulator: the demo world (a small connectome generated from a seed, written as CloudVolume layers and
tables) and the twin (the demo world, or a generated world at real scale, served as CAVE and graphene serve
theirs, with their limits).

Nothing of the product imports it: only the commands that start it (pipeline.cli, pipeline.twin_build), the
tests and the benchmarks. It imports only core, pipeline.context, config and the sources' interfaces
and formats (pipeline.sources). Both rules are import-linter contracts (pyproject.toml, `make lint`).
"""
