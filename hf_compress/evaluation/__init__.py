"""Measuring what compression did: parameters, bytes, sparsity, latency, task metrics, and the comparison table."""
