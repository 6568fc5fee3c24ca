"""lightsweep: train and compare classifiers with PyTorch Lightning, Hydra and MLflow.

Kept import-light on purpose: `import lightsweep` must not pull in torch (CLI start-up time).
"""

__version__ = "0.1.0"
