"""Hydra plugin shipped with lightsweep: the optimizer suite sweeper (`hydra/sweeper=optimizer_suite`).

Hydra only loads sweepers from the `hydra_plugins` namespace package, hence this location; the plan lives
in `lightsweep.sweeps.suite`, the scoring in `lightsweep.sweeps.scoring`, the report in
`lightsweep.sweeps.suite_report`.
"""
