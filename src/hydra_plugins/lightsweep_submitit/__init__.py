"""Hydra plugin shipped with lightsweep: the SLURM launcher that waits for every job of a sweep.

Hydra only loads launchers from the `hydra_plugins` namespace package, hence this location; the
launcher and its schema (`hydra/launcher=lightsweep_slurm`) are in `slurm_launcher.py`;
conf/hydra/launcher/slurm.yaml extends that schema with lightsweep's defaults (`hydra/launcher=slurm`).
"""
