"""Pruning while training: one schedule, one score accumulator, masks, and the weight, FFN and head pruners."""
