"""Benchmarks, run by hand (never part of `make test`); results in docs/benchmarks.md."""
