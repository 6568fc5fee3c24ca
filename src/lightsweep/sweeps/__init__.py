"""Sweeps: one MLflow parent run per Hydra multirun, a child per job, a comparison report at the end."""
