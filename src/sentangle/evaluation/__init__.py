"""Evaluation: the field's metrics and the test-time perturbations of the robustness suite."""
