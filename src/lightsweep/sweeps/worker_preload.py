"""Imported once by the fork server that parallel sweeps' workers start from (sweeps.workers)."""

from lightsweep.startup import pause_gc, resume_gc

pause_gc()  # see lightsweep/startup.py: the imports run ~1.5x faster without collections

from lightsweep.train import import_job_modules  # noqa: E402

import_job_modules()
# The ~700k objects of these modules live as long as the workers: frozen, out of the collector's
# sight, the full collection loky runs after every job takes ms instead of ~0.4 s, and forked
# workers keep sharing their pages (a collection writes to every object it walks).
resume_gc()
