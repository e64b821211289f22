"""Benchmarks: each script runs as `python bench/<name>.py`; see bench/README.md."""
