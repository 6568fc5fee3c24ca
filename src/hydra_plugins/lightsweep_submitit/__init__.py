"""Hydra plugin shipped with lightsweep: the SLURM launcher that waits for every job of a sweep.

Hydra only loads launchers from the `hydra_plugins` namespace package, hence this location; the
launcher and its config are in `slurm_launcher.py` (`hydra/launcher=submitit_slurm` uses it through
conf/hydra/launcher/submitit_slurm.yaml, `hydra/launcher=lightsweep_slurm` is its bare schema).
"""
