"""Hydra callbacks: the once-per-sweep work (parent run before the jobs, report after them)."""

from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lightsweep import interrupts
from lightsweep.errors import LightsweepError
from lightsweep.startup import resume_gc

log = logging.getLogger(__name__)


class MLflowSweepCallback(Callback):
    """Creates the sweep's parent run in `on_multirun_start` and builds its report in `on_multirun_end`.

    Jobs find the parent through a small file in the sweep dir and log as its children; they never
    create the schema, the experiment or a run by name, so parallel jobs cannot race on them. Jobs on
    other hosts (hydra/launcher=slurm) therefore need the sweep dir on shared storage, and a
    tracking server they can reach.
    """

    def __init__(self, target_acc: float = 0.85, report: bool = True, exit_nonzero_on_failure: bool = True):
        self.target_acc = target_acc
        self.report = report
        self.exit_nonzero_on_failure = exit_nonzero_on_failure

    @staticmethod
    def _tracking(config: DictConfig):
        logger = config.get("logger") or {}
        return logger.get("mlflow")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Hydra turns a callback's exception into a warning; without a parent run the jobs would
        # scatter as unrelated runs, so stop the sweep here with one clear line instead.
        try:
            self._start(config)
        except LightsweepError as err:  # resume= or the sweeper refused (continued_parent_run)
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except Exception as err:
            print(f"error: cannot start the sweep's MLflow parent run: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def _start(self, config: DictConfig) -> None:
        from lightsweep.overrides import swept_keys
        from lightsweep.sweeps.context import SweepContext

        sweep_dir = Path(str(config.hydra.sweep.dir))  # resolves (and caches) ${now:} for the jobs too
        grid = [str(o) for o in config.hydra.overrides.task]
        params_cfg = config.hydra.sweeper.get("params")
        searched = OmegaConf.to_container(params_cfg, resolve=False) if params_cfg else {}
        varying = swept_keys(grid, searched) + list(config.hydra.sweeper.get("varies") or [])  # custom sweepers say
        context = SweepContext(sweep_id=sweep_dir.name, varying=list(dict.fromkeys(varying)))
        tracking = self._tracking(config)
        resume = config.get("resume")
        if resume is not None and tracking is None:
            raise LightsweepError("resume= finds the sweep in MLflow, but logger=none: start the sweep again")
        if tracking is not None:
            _warn_if_nodes_cannot_reach(config, str(tracking.tracking_uri))
            if resume is not None:
                self._continue_parent(tracking, context, grid, str(resume), sweep_dir)
            else:
                self._create_parent(config, tracking, context, grid, searched, sweep_dir)
        context.write(sweep_dir)

    def _continue_parent(self, tracking, context, grid, resume: str, sweep_dir: Path) -> None:
        """`resume=last|<parent run id>`: the interrupted sweep's parent run, RUNNING again; its jobs keep
        their FINISHED runs and continue the others in place (lightsweep.resume.job_resume_point)."""
        from lightsweep.resume import find_sweep_to_resume
        from lightsweep.tracking.params import mask_override
        from lightsweep.tracking.store import ensure_experiment, open_store

        uri = tracking.tracking_uri
        client = open_store(uri)
        experiment_id = ensure_experiment(client, uri, tracking.experiment_name)
        parent = find_sweep_to_resume(client, experiment_id, resume, [mask_override(o) for o in grid])
        run_id = parent.info.run_id
        continue_parent_run(client, run_id, sweep_dir)
        atexit.register(_fail_if_still_running, client, run_id)
        context.sweep_id = parent.data.tags.get("lightsweep.sweep_id", context.sweep_id)
        context.tracking_uri, context.experiment_id, context.parent_run_id = uri, experiment_id, run_id
        context.resuming = True
        print(f"Sweep parent run {run_id} continued (experiment '{tracking.experiment_name}'): finished jobs are kept")

    def _create_parent(self, config, tracking, context, grid, searched, sweep_dir: Path) -> None:
        from mlflow.entities import Param

        from lightsweep.tracking.batches import log_batch
        from lightsweep.tracking.params import mask_override, mask_secrets
        from lightsweep.tracking.store import ensure_experiment, open_store

        uri = tracking.tracking_uri
        grid = [mask_override(o) for o in grid]
        wanted = continued_parent(config)  # (the sweeper may refuse its settings here, before any store work)
        client = open_store(uri)
        experiment_id = ensure_experiment(client, uri, tracking.experiment_name)
        if (run_id := wanted) is not None and in_experiment(client, run_id, experiment_id):
            continue_parent_run(client, run_id, sweep_dir)
            atexit.register(_fail_if_still_running, client, run_id)
            context.tracking_uri, context.experiment_id, context.parent_run_id = uri, experiment_id, run_id
            print(f"Sweep parent run {run_id} continued (experiment '{tracking.experiment_name}')")
            return
        choices = config.hydra.runtime.choices
        preset = choices.get("experiment") or choices.get("hparams_search") or "sweep"
        with interrupts.deferred():  # a Ctrl-C here must not leave a parent that nobody ends
            parent = client.create_run(
                experiment_id,
                run_name=f"{preset}-{context.sweep_id}",
                tags={
                    "lightsweep.role": "sweep",
                    "lightsweep.sweep_id": context.sweep_id,
                    "lightsweep.sweep_dir": str(sweep_dir),
                    "lightsweep.varying": ",".join(context.varying),
                    "overrides": " ".join(grid)[:5000],
                    "mlflow.source.name": "train.py",
                },
            )
            run_id = parent.info.run_id
            atexit.register(_fail_if_still_running, client, run_id)
        params = {f"sweep.{k}": str(v) for k, v in {**_grid_params(grid), **searched}.items()}
        params["sweep.sweeper"] = str(config.hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1]
        params["sweep.launcher"] = str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1]
        log_batch(client, run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        job_config = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        # Unresolved: per-job values (output dirs, swept keys) only exist inside the jobs.
        masked = mask_secrets(OmegaConf.to_container(job_config, resolve=False))
        client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(masked)), "sweep_config.yaml")
        client.log_dict(
            run_id, {"overrides": grid, "searched": searched, "varying": context.varying}, "sweep_grid.yaml"
        )
        context.tracking_uri, context.experiment_id, context.parent_run_id = uri, experiment_id, run_id
        print(f"Sweep parent run {run_id} (experiment '{tracking.experiment_name}'); jobs log as its children")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from lightsweep.sweeps.context import SweepContext

        resume_gc()  # (no-op unless no job ran in this process)

        sweep_dir = Path(str(config.hydra.sweep.dir))
        context = SweepContext.read(sweep_dir)
        if context is None or not context.tracked:
            self.untracked_failures(sweep_dir)
            return
        if context.detached:  # its SLURM tasks run on: `pipelines/collect.py` ends the sweep (the launcher said how)
            print(f"Sweep parent run {context.parent_run_id} stays RUNNING until its tasks are collected")
            return
        joblib = "JoblibLauncher" in str(config.hydra.launcher.get("_target_", ""))
        failed = self.conclude(
            context,
            sweep_dir,
            str(config.get("log_models", "best")),
            trusted_targets(config),
            _joblib_args(config) if joblib else None,
        )
        if failed and self.exit_nonzero_on_failure:
            raise SystemExit(1)

    def conclude(
        self, context, sweep_dir: Path, log_models: str, allowed: list[str], parallel: dict | None = None
    ) -> bool:
        """Once every job has ended: the best child's model, the report, the parent's end. True when a job
        failed or the best model could not be logged. Also run by `pipelines/collect.py` for a sweep that
        did not wait for its SLURM tasks."""
        from lightsweep.tracking.store import open_store, ui_command

        client = open_store(context.tracking_uri)
        model_failed = not self.best_model(log_models, context.tracking_uri, context.parent_run_id, allowed, parallel)
        try:
            failed = self.finish(client, context.parent_run_id, sweep_dir)
        except Exception as err:  # Hydra would turn it into a warning and exit 0
            print(
                f"error: the sweep report failed ({type(err).__name__}: {err}); the parent run is FAILED, the jobs' "
                f"runs are kept: rebuild it with `python pipelines/compare.py sweep={context.parent_run_id}`",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
        print(f"Review it: {ui_command(context.tracking_uri)}")
        return bool(model_failed or failed)

    def untracked_failures(self, sweep_dir: Path) -> None:
        """A sweep without MLflow (logger=none): the jobs' own records are all there is to count."""
        from lightsweep.sweeps.failures import recorded

        if failed := recorded(sweep_dir):
            jobs = ", ".join(f"#{f.job} ({f.reason[:200]})" for f in failed)
            print(f"{len(failed)} failed jobs: {jobs}", file=sys.stderr)
            if self.exit_nonzero_on_failure:
                raise SystemExit(1)

    @staticmethod
    def best_model(
        mode: str, tracking_uri: str, parent_run_id: str, allowed: list[str], parallel: dict | None = None
    ) -> bool:
        """The best child (validation accuracy of its best checkpoint): its MLflow model logged from
        that checkpoint unless it has one (`mode`, log_models=best), and the command that registers it.
        False when its model could not be logged (the sweep's runs are intact either way).

        With the joblib launcher this process has not imported torch (its jobs ran in loky workers):
        the step runs in one of those workers (`parallel`: the launcher's joblib arguments), which
        `joblib.Parallel` reuses with torch, Lightning and MLflow loaded, instead of importing them all
        here (seconds)."""
        import time

        from lightsweep import allowlist
        from lightsweep.errors import LightsweepError
        from lightsweep.tracking.logged_models import sweep_best_model_at

        register = f"python pipelines/register.py sweep={parent_run_id}"
        started = time.perf_counter()
        try:
            if mode == "best" and parallel is not None and "torch" not in sys.modules:
                from joblib import Parallel, delayed

                best = Parallel(**parallel)([delayed(sweep_best_model_at)(tracking_uri, parent_run_id, mode, allowed)])[
                    0
                ]
            else:
                best = sweep_best_model_at(tracking_uri, parent_run_id, mode, allowed)
        except allowlist.UntrustedConfig as err:
            print(f"error: the best run's model was not logged: {err}", file=sys.stderr)
            return False
        except LightsweepError as err:  # no finished child: the summary says why
            log.info("no best model: %s", err)
            return True
        except Exception as err:
            print(
                f"error: the best run's model could not be logged ({type(err).__name__}: {err}); "
                f"`{register}` logs and registers it",
                file=sys.stderr,
            )
            return False
        seconds = time.perf_counter() - started
        what = f"model models:/{best['model_id']}" if best["model_id"] else "no model (log_models=none)"
        print(
            f"Best run {best['run_name']} (val/acc {best['val_acc']:.4f} at its best checkpoint): {what} "
            f"[{seconds:.2f} s]"
        )
        print(f"Register it as the champion: {register}")
        return True

    def finish(self, client, parent_run_id: str, sweep_dir: Path) -> list:
        """The failed jobs (logged to the parent first: the report counts them), the report (logged to
        the parent and written to the sweep dir), then the parent's status; returns the failed jobs."""
        from lightsweep.sweeps import failures

        children = client.search_runs(
            [client.get_run(parent_run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
            max_results=10000,
        )
        failed = failures.collect(sweep_dir, children)
        try:
            failures.log(client, parent_run_id, failed)
            if self.report:
                from lightsweep.sweeps.report import publish_report

                publish_report(client, parent_run_id, sweep_dir / "report", self.target_acc)
            elif failed:
                print(f"{len(failed)} failed jobs: see the parent run's {failures.ARTIFACT}", file=sys.stderr)
        except BaseException as err:
            client.set_tag(parent_run_id, "lightsweep.failure_reason", f"report: {type(err).__name__}: {err}"[:5000])
            client.set_terminated(parent_run_id, "FAILED")
            raise
        all_failed = bool(children) and all(c.info.status == "FAILED" for c in children)
        client.set_terminated(parent_run_id, "FAILED" if all_failed or not children else "FINISHED")
        return failed


def trusted_targets(config: DictConfig) -> list[str]:
    """The targets the sweep's best model may be rebuilt from besides lightsweep's own: the user's
    `allowed_targets` and the sweep's own config's (lightsweep.allowlist)."""
    from lightsweep import allowlist

    return [*(config.get("allowed_targets") or []), *allowlist.composed_targets(config)]


def continued_parent(config: DictConfig) -> str | None:
    """The parent run that this sweep continues, else None (a new one is created).

    The sweeper's class says (`continued_parent_run(config) -> run id | None`; a sweeper without it
    continues nothing): the Optuna sweeper names its study's parent. The sweeper may refuse its
    settings here (LightsweepError), before any run exists."""
    from hydra.utils import get_class

    target = config.hydra.sweeper.get("_target_")
    try:
        sweeper = get_class(str(target)) if target else None
    except Exception:  # not a class Hydra can load: Hydra says so when it instantiates the sweeper
        return None
    ask = getattr(sweeper, "continued_parent_run", None)
    return ask(config) if ask is not None else None


def in_experiment(client, run_id: str, experiment_id: str) -> bool:
    """Whether `run_id` is a live run of this experiment of this store (a run to continue may have been
    deleted, or live in another store)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        run = None
    if run is None or run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        print(f"The sweep's earlier parent run {run_id} is not in this experiment: a new parent run")
        return False
    return True


def continue_parent_run(client, run_id: str, sweep_dir: Path) -> None:
    """Reopen a sweep's parent run for another pass: RUNNING again (`lightsweep.resumed` counts the
    passes), its `lightsweep.sweep_dir` this pass's. Children that an earlier pass left RUNNING (its
    process was killed, kill -9) end KILLED; their jobs are the sweeper's to run again."""
    from lightsweep.tracking.run import end_run, reopen_run

    parent = client.get_run(run_id)
    left = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
        max_results=10000,
    )
    for child in left:
        end_run(client, child.info.run_id, "KILLED", "its sweep was killed while it ran")
    reopen_run(client, run_id)
    with interrupts.deferred():
        client.set_tag(run_id, "lightsweep.sweep_dir", str(sweep_dir))


def _joblib_args(config: DictConfig) -> dict:
    """The sweep launcher's own `joblib.Parallel` arguments (as Hydra's joblib launcher passes them), so
    that joblib reuses its loky workers."""
    args = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    args.pop("_target_", None)
    args["backend"] = "loky"
    for key in ("pre_dispatch", "batch_size", "max_nbytes"):
        try:
            args[key] = int(args[key]) if args.get(key) else args.get(key)
        except (TypeError, ValueError):
            pass
    import inspect

    from joblib import Parallel

    return {k: v for k, v in args.items() if k in inspect.signature(Parallel).parameters}


def _warn_if_nodes_cannot_reach(config: DictConfig, tracking_uri: str) -> None:
    """Jobs on other hosts (a SLURM launcher) need a store they can reach: say so before submitting."""
    from urllib.parse import urlparse

    launcher = str(config.hydra.launcher.get("_target_", ""))
    if "Slurm" not in launcher:
        return
    uri = urlparse(tracking_uri)
    if uri.scheme in ("sqlite", "file", ""):
        problem = f"a local store ({uri.scheme or 'file'}) is not shared safely between cluster nodes"
    elif uri.hostname in ("127.0.0.1", "localhost", "::1"):
        problem = f"{uri.hostname} on a compute node is that node, not this machine's server"
    else:
        return
    from lightsweep.tracking.uris import describe

    print(
        f"warning: cluster sweep logging to {describe(tracking_uri)}: {problem}; use logger=mlflow_server "
        "with MLFLOW_TRACKING_URI=http://<server host>:<port> (docs/slurm.md)",
        file=sys.stderr,
    )


def _fail_if_still_running(client, run_id: str) -> None:
    """The sweep died before `on_multirun_end` (a launcher crash, Ctrl-C): never leave the parent,
    or a child whose worker process died with it, RUNNING."""
    try:
        parent = client.get_run(run_id)
        if parent.info.status != "RUNNING" or parent.data.tags.get("lightsweep.detached") == "true":
            return  # (a sweep whose SLURM tasks run on is ended by `pipelines/collect.py`)
        children = client.search_runs(
            [parent.info.experiment_id],
            max_results=10000,
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
        )
        for child in children:
            client.set_tag(child.info.run_id, "lightsweep.failure_reason", "its sweep ended while it ran")
            client.set_terminated(child.info.run_id, "KILLED")
        client.set_tag(run_id, "lightsweep.failure_reason", "sweep ended before its report")
        client.set_terminated(run_id, "FAILED")
    except Exception as err:  # pragma: no cover - store gone at exit
        log.warning("could not close sweep run %s: %s", run_id, err)


def _grid_params(grid: list[str]) -> dict[str, str]:
    from lightsweep.overrides import override_key

    return {override_key(o): o.split("=", 1)[1] for o in grid if "=" in o}
