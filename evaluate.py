"""Evaluate an MLflow model on a test split: `python evaluate.py model_uri=models:/fashion_mnist-mlp@champion`."""

from lightsweep.evaluate import run

if __name__ == "__main__":
    run()
