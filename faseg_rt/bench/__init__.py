"""Benchmarks, each side by side with a reference measured in the same run: latency, throughput,
ablations, profile (common.py: what they share).  Run through `faseg-rt bench` or benchmarks/."""
