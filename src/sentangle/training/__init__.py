"""The one training loop (trainer) and its data-parallel helpers (distributed)."""
