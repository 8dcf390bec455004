"""Serving tests: a real semore-serve on loopback (see conftest.py)."""
