"""Helpers shared by tests and by the benchmarks that build the same tiny models (never shipped)."""
