"""Benchmarks against the peers, run by `make bench`; each writes JSON into benchmarks/results/."""
