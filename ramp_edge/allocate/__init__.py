"""Allocation: choose a quant type per tensor under a global budget (RAMP and baselines)."""

METHODS = ("knapsack", "measured", "greedy", "sac", "predicted", "preset", "uniform")
