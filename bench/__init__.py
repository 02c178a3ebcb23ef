"""Benchmarks of rerankd against the servers users would pick instead; see bench/README.md."""
