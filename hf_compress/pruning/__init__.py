"""Gradient-based unstructured pruning: importance scores, the cubic schedule, masks."""
