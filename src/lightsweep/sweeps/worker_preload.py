"""Imported once by the fork server that parallel sweeps' workers start from (sweeps.callbacks)."""

from lightsweep.train import import_job_modules

import_job_modules()
