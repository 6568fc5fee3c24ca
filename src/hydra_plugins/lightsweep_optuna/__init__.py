"""Hydra plugin shipped with lightsweep: `hydra/sweeper=optuna`, hyperparameter search on current Optuna.

It replaces hydra-optuna-sweeper (whose newest release requires Optuna < 3) with the same config keys,
built on Optuna's ask-and-tell API: persistent, resumable studies, pruning and Optuna's samplers
(docs/search.md). Hydra only loads sweepers from the `hydra_plugins` namespace package, hence this
location; the sweeper and its schemas are in `optuna_sweeper.py`, the study's parts that the jobs
share in `lightsweep.sweeps.study`, the pruning callback in `lightsweep.callbacks.pruning`.
"""
