"""`hydra/sweeper=optimizer_benchmark`: a fair optimizer comparison in two stages, one parent run.

Stage 1 (tune): per optimizer, a log-spaced learning-rate grid, one seed, scored on the validation
split (`val/acc`, no test). Stage 2 (final): each optimizer at its best learning rate, re-run with
several seeds and tested on the test split. This follows DeepOBS and "Optimizer Benchmarking Needs to
Account for Hyperparameter Tuning" (ICML 2020): one learning rate per optimizer is not a comparison.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]


@dataclass
class OptimizerBenchmarkSweeperConf:
    _target_: str = "hydra_plugins.lightsweep_benchmark.optimizer_benchmark_sweeper.OptimizerBenchmarkSweeper"
    optimizers: List[str] = field(default_factory=lambda: list(OPTIMIZERS))
    # log10 of the smallest and largest learning rate, and how many grid points (log-spaced)
    lr_log10_min: float = -4.0
    lr_log10_max: float = 0.0
    lr_points: int = 9
    tuning_seed: int = 0
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3])
    # extra fixed overrides for every job, like the basic sweeper's `params`
    params: Optional[Dict[str, str]] = None
    # what the jobs of this sweeper vary (names its runs and job dirs)
    varies: List[str] = field(default_factory=lambda: ["optimizer", "optimizer.lr", "seed"])


ConfigStore.instance().store(group="hydra/sweeper", name="optimizer_benchmark", node=OptimizerBenchmarkSweeperConf)


def lr_grid(lo: float, hi: float, points: int) -> List[float]:
    if points == 1:
        return [10**lo]
    return [float(f"{10 ** (lo + i * (hi - lo) / (points - 1)):.3g}") for i in range(points)]


def best_lr(scores: Dict[float, float]) -> float:
    """The lr with the best validation accuracy; a failed/diverged lr scores NaN and never wins."""
    finite = {lr: s for lr, s in scores.items() if s is not None and not math.isnan(s)}
    if not finite:
        return min(scores)  # everything failed: the smallest lr is the least bad guess
    top = max(finite.values())
    return min(lr for lr, s in finite.items() if s == top)


class OptimizerBenchmarkSweeper(Sweeper):
    def __init__(self, optimizers, lr_log10_min, lr_log10_max, lr_points, tuning_seed, seeds, params=None, varies=None):
        self.optimizers = list(optimizers)
        self.grid = lr_grid(lr_log10_min, lr_log10_max, lr_points)
        self.tuning_seed = tuning_seed
        self.seeds = list(seeds)
        self.params = dict(params or {})
        self.config: Optional[DictConfig] = None
        self.launcher = None
        self.best: Dict[str, float] = {}

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        from lightsweep.overrides import swept_keys

        base = [*(f"{k}={v}" for k, v in self.params.items()), *arguments]
        if swept := swept_keys(base):
            raise ValueError(f"optimizer_benchmark runs its own grid; drop the sweep over {', '.join(swept)}")
        points = [(opt, lr) for opt in self.optimizers for lr in self.grid]
        tune = [
            [
                *base,
                f"optimizer={opt}",
                f"optimizer.lr={lr}",
                f"seed={self.tuning_seed}",
                "test=false",
                "optimized_metric=val/acc",
                "+tags.stage=tune",
            ]
            for opt, lr in points
        ]
        log.info(
            "optimizer benchmark, stage 1: %d optimizers x %d learning rates %s",
            len(self.optimizers),
            len(self.grid),
            self.grid,
        )
        tune_results = self.launcher.launch(tune, initial_job_idx=0)
        scores: Dict[str, Dict[float, float]] = {opt: {} for opt in self.optimizers}
        for (opt, lr), result in zip(points, tune_results):
            value = result.return_value if result.status == JobStatus.COMPLETED else math.nan
            scores[opt][lr] = float(value) if value is not None else math.nan
        self.best = {opt: best_lr(s) for opt, s in scores.items()}
        log.info("optimizer benchmark, best learning rates: %s", self.best)
        self._record_best()

        final = [
            [
                *base,
                f"optimizer={opt}",
                f"optimizer.lr={self.best[opt]}",
                f"seed={seed}",
                "test=true",
                "+tags.stage=final",
            ]
            # Seed by seed: a vectorized launcher's groups then hold whole seeds (equal seed groups).
            for seed in self.seeds
            for opt in self.optimizers
        ]
        log.info("optimizer benchmark, stage 2: best lr x seeds %s", self.seeds)
        final_results = self.launcher.launch(final, initial_job_idx=len(tune))
        return [tune_results, final_results]

    def _record_best(self) -> None:
        """The chosen learning rates as params of the sweep's parent run (when tracked)."""
        from pathlib import Path

        from lightsweep.sweeps.context import SweepContext

        context = SweepContext.read(Path(str(self.config.hydra.sweep.dir)))
        if context is None or not context.tracked:
            return
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        from lightsweep.tracking.batches import log_batch

        client = MlflowClient(context.tracking_uri)
        log_batch(client, context.parent_run_id, params=[Param(f"best_lr.{o}", str(lr)) for o, lr in self.best.items()])
