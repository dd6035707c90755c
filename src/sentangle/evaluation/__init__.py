"""Evaluation beyond the clean test split: test-time perturbations (robust)."""
