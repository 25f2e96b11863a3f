"""Benchmarks for issue #5: `python -m benchmarks [--smoke]` prints and saves a table of ratios."""
