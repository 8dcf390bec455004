"""Tools shared by the tests, the benchmarks and the GPU scripts: tiny generated models, random
batches, latency summaries and a local fleet in subprocesses.

Not part of the wheel (pyproject lists the packages it ships): a robot installs none of this.
"""
