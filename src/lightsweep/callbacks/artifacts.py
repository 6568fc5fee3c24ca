"""A run's plots and best checkpoint, stored by the process that trained, before the run can end."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import MLFlowLogger

from lightsweep.callbacks.history import EpochHistory


class RunArtifacts(pl.Callback):
    """Draws the plots and uploads them and the best checkpoint to the MLflow run (global rank 0).

    Lightning callbacks run in the processes that train, spawned DDP workers included, so nothing
    has to come back to the main process: when fit ends, the learning curves and the best
    checkpoint; when the test ends, the confusion matrix and the model's plots (weight templates,
    decision boundary) of the tested weights. Without a test (`tested=False`, or a diverged run,
    which is not tested), the model's plots are drawn when fit ends. Files also stay in `plot_dir`.
    """

    def __init__(self, plot_dir: str, tested: bool = True):
        self.plot_dir = Path(plot_dir)
        self.tested = tested

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        from lightsweep import plots

        for logger in trainer.loggers:
            logger.save()  # the last epoch's training metrics are still queued
        history = _history(trainer)
        paths = [plots.learning_curves(history.history, self.plot_dir / "learning_curves.png")]
        diverged = history.diverged_at is not None
        if diverged or not self.tested:
            paths += self._model_plots(trainer, pl_module)
        checkpoint = trainer.checkpoint_callback
        for logger in _mlflow_loggers(trainer):
            for path in paths:
                logger.experiment.log_artifact(logger.run_id, str(path), "plots")
            if checkpoint is not None and checkpoint.best_model_path:
                logger.experiment.log_artifact(logger.run_id, checkpoint.best_model_path, "checkpoints")
            if diverged:
                logger.experiment.set_tag(logger.run_id, "lightsweep.diverged", "true")

    def on_test_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        from lightsweep import plots

        paths = self._model_plots(trainer, pl_module)
        confusion = _history(trainer).test_confusion
        if confusion is not None:
            names = trainer.datamodule.class_names
            paths.append(plots.confusion_matrix(confusion, names, self.plot_dir / "confusion_matrix.png"))
        for logger in _mlflow_loggers(trainer):
            for path in paths:
                logger.experiment.log_artifact(logger.run_id, str(path), "plots")

    def _model_plots(self, trainer, pl_module) -> list[Path]:
        import torch

        from lightsweep import plots

        datamodule = trainer.datamodule
        names, paths = datamodule.class_names, []
        linear = getattr(pl_module.net, "linear", None)
        if linear is not None and datamodule.image_shape and linear.out_features > 1:
            paths.append(plots.weight_templates(linear.weight, datamodule.image_shape, names,
                                                self.plot_dir / "weights.png"))
        if datamodule.input_dim == 2:
            x, y = (t.cpu() for t in datamodule.tensors["test"])
            device = pl_module.device

            def predict_proba(points: torch.Tensor) -> torch.Tensor:
                logits = pl_module(points.to(device)).float().cpu()
                return logits.sigmoid() if logits.ndim == 1 else logits.softmax(dim=1)[:, 1]

            paths.append(plots.decision_boundary(predict_proba, x, y, names, self.plot_dir / "decision_boundary.png"))
        return paths


def _history(trainer) -> EpochHistory:
    return next(c for c in trainer.callbacks if isinstance(c, EpochHistory))


def _mlflow_loggers(trainer) -> list[MLFlowLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)]
