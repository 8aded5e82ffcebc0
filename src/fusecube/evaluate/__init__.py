"""Accuracy against ground truth and held-out data."""
