"""Parallel sweeps' worker processes: forked from a server that imports a job's modules once.

A fresh loky worker of `hydra/launcher=joblib` spends ~6 s of CPU importing torch, Lightning and
MLflow before its first job, and every worker pays it at the same time. Forked from a multiprocessing
fork server that imported them (sweeps/worker_preload.py), a worker starts in milliseconds. The
server's imports (~4 s) are the longest part of a parallel sweep's start, so they begin as early as
possible: when the command line asks for a joblib sweep (`start_parallel_workers_early`, called by
the CLI before Hydra composes the config), else when the composed config does
(`start_parallel_workers`, from the sweep callback's `on_multirun_start`). The server runs no tensor
code, so forking it is safe.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence

PRELOAD = "lightsweep.sweeps.worker_preload"
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
_UNSET = object()  # n_jobs not given: the joblib launcher's default


def start_parallel_workers(config) -> bool:
    """From the composed config: start the fork server if the jobs run in joblib worker processes
    (a no-op if the CLI already did). Returns whether they do."""
    launcher = config.hydra.get("launcher") or {}
    if not _runs_in_workers(str(launcher.get("_target_", "")), launcher.get("n_jobs", _UNSET)):
        return False
    _start_fork_server()
    return True


def start_parallel_workers_early(argv: Sequence[str]) -> bool:
    """From the command line, before Hydra composes the config twice (~0.6-1 s): start the fork
    server if it asks for a joblib sweep. The composed config still decides (`start_parallel_workers`);
    a guess it contradicts (say an experiment file setting n_jobs=1) costs one idle server's imports."""
    if not parallel_sweep_requested(argv):
        return False
    _start_fork_server()
    return True


def parallel_sweep_requested(argv: Sequence[str]) -> bool:
    """Whether `python train.py <argv>` is a multirun with `hydra/launcher=joblib` and, by the
    command line, more than one job at a time. Read with Hydra's own argument and override parsers."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
        if not args.multirun or args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
            return False  # (a single run parses no overrides here)
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except (Exception, SystemExit):  # a bad command line: Hydra reports it
        return False
    launcher, n_jobs = "", _UNSET
    for override in overrides:
        if override.is_delete() or override.is_sweep_override():
            continue
        if override.key_or_group == "hydra/launcher":
            launcher = JOBLIB_LAUNCHER if override.value() == "joblib" else str(override.value())
        elif override.key_or_group == "hydra.launcher.n_jobs":
            n_jobs = override.value()
    return _runs_in_workers(launcher, n_jobs)


def _runs_in_workers(launcher_target: str, n_jobs=_UNSET) -> bool:
    if not launcher_target.endswith("JoblibLauncher") or "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from joblib import effective_n_jobs

    if n_jobs is _UNSET:
        from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

        n_jobs = JobLibLauncherConf.n_jobs

    try:
        return effective_n_jobs(n_jobs) > 1  # 1: joblib runs the jobs in this process
    except (TypeError, ValueError):  # not a number: the launcher reports it
        return False


def _start_fork_server() -> None:
    from multiprocessing import forkserver

    from joblib.externals.loky.backend.context import set_start_method

    multiprocessing.set_forkserver_preload([PRELOAD])
    forkserver.ensure_running()  # no-op when it runs
    set_start_method("forkserver", force=True)  # loky's workers (joblib's backend) fork from it
    global _stop_registered
    if not _stop_registered:
        atexit.register(_stop_fork_server)
        _stop_registered = True


_stop_registered = False


def _stop_fork_server() -> None:
    """At exit, end the server now rather than let it notice: it may still be importing (a sweep
    that failed to start), and it holds this process's stdout and stderr, which a caller reading
    them to the end (a pipe, `subprocess.run(capture_output=True)`) waits for. Its workers have
    exited by now; the server keeps no state."""
    pid = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)  # kept privately
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):  # reap it (a few ms), so that nothing of this run outlives it
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.005)
    except (ProcessLookupError, ChildProcessError, PermissionError):
        pass
