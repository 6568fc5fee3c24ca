"""Hydra plugin shipped with lightsweep: the vectorized launcher (issue 14, vectorized sweeps).

Hydra only loads launchers from the `hydra_plugins` namespace package, hence this location; the
launcher and its schema (`hydra/launcher=vectorized`) are in `vectorized_launcher.py`.
"""
