"""Train a classifier: `python train.py model=softmax` (see README for groups and sweeps)."""

from lightsweep.cli import run

if __name__ == "__main__":
    run()
