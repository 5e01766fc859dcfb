"""Benchmarks: they print numbers and assert nothing about speed. `pytest -m benchmark -s`."""
