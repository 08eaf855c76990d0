"""Sweeps: Hydra multiruns as one MLflow parent run with a child run per job (see sweeps/ for the definitions)."""
