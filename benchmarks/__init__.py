"""Benchmarks, each run from the repository root as `python -m benchmarks.NAME`; each writes
benchmarks/results/NAME.json."""
