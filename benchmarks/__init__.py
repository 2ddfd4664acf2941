"""Benchmark scripts: ``python -m benchmarks.<name>``; each prints one JSON line per result."""
