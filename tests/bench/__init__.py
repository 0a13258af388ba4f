"""Benchmarks (``python -m tests.bench.<name>``); results go to docs/benchmarks.md."""
