"""Simulate and score explanations: splits, simulators, correlation, detection and fuzzing."""
