"""Studies built from runs: compare models, ablate a model's switches, sweep hyperparameters,
robustness under test-time perturbations, and reports over run folders."""
