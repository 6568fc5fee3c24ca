"""Hydra plugin shipped with lightsweep: the two-stage optimizer benchmark sweeper.

Hydra only loads sweepers from the `hydra_plugins` namespace package, hence this location; the
logic lives in `optimizer_benchmark_sweeper.py`, the report sections in `lightsweep.sweeps.benchmark`.
"""
