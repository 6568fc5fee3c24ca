"""The command line: Hydra composes `conf/`, `train(cfg)` does the work.

Errors the user can fix (LightsweepError) are printed as one line; the exit code is 2.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

import hydra
from omegaconf import DictConfig

from lightsweep.config import project_root
from lightsweep.errors import LightsweepError
from lightsweep.startup import pause_gc
from lightsweep.sweeps.workers import start_parallel_workers_early

log = logging.getLogger("lightsweep")

# conf/hydra/launcher/submitit_{slurm,local}.yaml replace the plugin's configs by name on purpose (same
# fields, lightsweep's defaults); Hydra still validates them against the plugin's schema, and warns.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_\w+' is validated against ConfigStore schema")


def task(cfg: DictConfig):
    """One run, or one job of a sweep. Returns `cfg.optimized_metric` (for Optuna) or all metrics."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lightsweep.train import train

    _exit_fast_from_worker()
    objective = cfg.get("optimized_metric")
    try:
        metrics = train(cfg)
    except BaseException as err:
        from lightsweep.tracking.run import interruption

        if (signal_name := interruption(err)) is None and not isinstance(err, Exception):
            raise
        sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
        if signal_name is not None:
            # The run is KILLED and its checkpoints stay; a sweep stops too (the user asked it to).
            then = "the sweep stops" if sweeping else "continue it with the same overrides plus resume=last"
            print(f"interrupted ({signal_name}): the run is marked KILLED, its checkpoints are kept; {then}", file=sys.stderr)
            raise SystemExit(128 + signal.Signals[signal_name].value) from None
        if not sweeping:
            if not isinstance(err, LightsweepError) or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise  # a bug, or asked for: keep the traceback
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        # In a sweep the job is already FAILED in MLflow; returning (not raising) lets the other
        # jobs, the report and an Optuna study go on. A failed trial scores `objective_on_failure`.
        log.error("job failed: %s: %s", type(err).__name__, err)
        print(f"job failed: {err}", file=sys.stderr)
        return cfg.get("objective_on_failure", float("nan")) if objective else {"failed": str(err)}
    return metrics.get(objective) if objective else metrics


main = hydra.main(version_base="1.3", config_path=str(project_root() / "conf"), config_name="config")(task)


def run() -> None:
    """`python train.py ...`: `main()`, then an exit that skips tearing down the interpreter.

    After a run, torch, Lightning, MLflow and Hydra leave ~5000 modules loaded; Python's final
    teardown of them (module by module, then garbage collection) takes 2-3 s, about a fifth of
    a 20-epoch softmax run. Everything a normal exit does that has an effect still happens first:
    non-daemon threads finish, atexit handlers run (logging, joblib/loky, MLflow), stdio is
    flushed. Exceptions other than SystemExit (a bug's traceback, Ctrl-C) exit the usual way, and
    so does everything under a profiler, debugger or coverage tool (they report at the very end).
    The garbage collector is paused until the libraries are imported (lightsweep.startup), and a
    joblib sweep's worker server starts importing before Hydra composes (lightsweep.sweeps.workers).
    """
    pause_gc()
    start_parallel_workers_early(sys.argv[1:])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    if sys.gettrace() is not None or sys.getprofile() is not None:
        raise SystemExit(code)
    _exit_now(code)


def _exit_fast_from_worker() -> None:
    """In a joblib/loky worker (parallel sweeps): skip the interpreter teardown when it exits.

    The sweep waits for its workers to exit, and each then spends 2-3 s tearing down torch,
    Lightning and MLflow. Registered before the first job imports them, this atexit handler runs
    after theirs (atexit is last-in, first-out) and ends the process with its status: the handlers
    it skips were registered when the worker started (logging's, whose file handlers flush every
    record; multiprocessing's, which the worker runs itself before exiting).
    """
    import multiprocessing

    global _worker_exit_registered
    if _worker_exit_registered or not multiprocessing.current_process().name.startswith("LokyProcess"):
        return
    import atexit

    def exit_now() -> None:
        _flush_stdio()
        os._exit(0)

    atexit.register(exit_now)
    _worker_exit_registered = True


_worker_exit_registered = False


def _exit_now(code) -> None:
    import atexit
    import threading

    if isinstance(code, str):  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        code = 1
    # What the interpreter does first at exit, in its order: the threading module's own exit hooks
    # (concurrent.futures and joblib/loky stop their executors there), then waiting for non-daemon
    # threads, then the atexit handlers.
    threading._shutdown()
    atexit._run_exitfuncs()
    _flush_stdio()
    os._exit(0 if code is None else int(code))


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to flush
            pass


if __name__ == "__main__":
    run()
