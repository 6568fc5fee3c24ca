"""A run's plots, best checkpoint, data sets and MLflow model, stored by the process that trained,
before the run can end."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import MLFlowLogger

from lightsweep.callbacks.history import EpochHistory

log = logging.getLogger(__name__)


class RunArtifacts(pl.Callback):
    """Draws the plots and uploads them and the best checkpoint to the MLflow run (global rank 0);
    logs the data sets as the run's inputs and, with `log_model`, the run's MLflow model.

    Lightning callbacks run in the processes that train, spawned DDP workers included, so nothing
    has to come back to the main process: when fit starts, the train/validation/test data sets;
    when fit ends, the learning curves and the best checkpoint; when the test ends, the confusion
    matrix, the most confident mistakes (image data) and the model's plots (weight templates,
    decision boundary) of the tested weights, then the MLflow model of those weights (the best
    checkpoint's). Without a test (`tested=False`, or a diverged run, which is not tested), the
    model's plots are drawn when fit ends, and the model (not for a diverged run) is logged from the
    best checkpoint file. Files also stay in `plot_dir`.

    Figures go to `drawer` (lightsweep.plots.drawer: here, or worker processes that draw a vectorized
    group's members' figures at once); they are uploaded when the stage ends (`teardown`), before the
    run can end.

    Its checkpoint state is the model's input spec (raw sample format, normalisation, an input
    example): what it takes to log the model later from the best checkpoint alone (a sweep's best
    child, at the sweep's end).
    """

    def __init__(
        self,
        plot_dir: str,
        tested: bool = True,
        log_model: bool = True,
        data_name: str | None = None,
        plots: bool = True,
    ):
        from lightsweep.plots.drawer import Drawer

        self.plot_dir = Path(plot_dir)
        self.plots = plots  # False: no plots drawn (the checkpoint, data sets and model are stored all the same)
        self.tested = tested
        self.log_model = log_model
        self.data_name = data_name
        self.spec = None
        self.datasets: dict = {}
        self.drawer = Drawer()
        self.drawing: list = []  # futures of figures not uploaded yet

    def state_dict(self) -> dict:
        return self.spec.state() if self.spec is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass  # the spec is taken from the data again when fit starts

    def on_fit_start(self, trainer, pl_module):
        from lightsweep.tracking.datasets import log_datasets
        from lightsweep.tracking.serving import InputSpec

        datamodule = trainer.datamodule
        if datamodule is None or "val" not in getattr(datamodule, "tensors", {}):
            return
        self.spec = InputSpec.from_training(datamodule, pl_module)
        if trainer.is_global_zero:
            for logger in _mlflow_loggers(trainer):
                self.datasets = log_datasets(logger.experiment, logger.run_id, datamodule, self.data_name)

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        from lightsweep import plots

        for logger in trainer.loggers:
            logger.save()  # the last epoch's training metrics are still queued
        history = _history(trainer)
        diverged = history.diverged_at is not None
        if self.plots:
            self.draw(plots.learning_curves, history.history, self.plot_dir / "learning_curves.png")
            if diverged or not self.tested:
                self._model_plots(trainer, pl_module)
        checkpoint = trainer.checkpoint_callback
        for logger in _mlflow_loggers(trainer):
            if checkpoint is not None and checkpoint.best_model_path:
                logger.experiment.log_artifact(logger.run_id, checkpoint.best_model_path, "checkpoints")
            if diverged:
                logger.experiment.set_tag(logger.run_id, "lightsweep.diverged", "true")
        if not self.tested and not diverged:
            self._log_model(trainer, pl_module, best_checkpoint=checkpoint.best_model_path if checkpoint else None)

    def on_test_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        from lightsweep import plots

        if self.plots:
            self._model_plots(trainer, pl_module)
        confusion = _history(trainer).test_confusion
        if confusion is not None and self.plots:
            names = trainer.datamodule.class_names
            self.draw(plots.confusion_matrix, confusion.numpy(), names, self.plot_dir / "confusion_matrix.png")
        if self.plots and trainer.datamodule.image_shape:
            self._mistakes(trainer, pl_module)
        self._log_model(trainer, pl_module)

    def teardown(self, trainer, pl_module, stage):
        """The stage's figures go to the run once drawn (before it can end: `then` keeps the order)."""
        drawing, self.drawing = self.drawing, []
        if not trainer.is_global_zero:
            return
        loggers = _mlflow_loggers(trainer)

        def upload() -> None:
            for path in (future.result() for future in drawing):
                for logger in loggers:
                    if path is not None:
                        logger.experiment.log_artifact(logger.run_id, str(path), "plots")

        self.drawer.then(self, drawing, upload)

    def on_exception(self, trainer, pl_module, exception):
        for future in self.drawing:  # the run ends FAILED or KILLED now: its figures are not awaited
            future.cancel()
        self.drawing = []

    def draw(self, function, *args) -> None:
        """Draw a figure (lightsweep.plots) with the drawer; it is uploaded at the stage's end."""
        self.drawing.append(self.drawer.submit(function, *args))

    def _log_model(self, trainer, pl_module, best_checkpoint: str | None = None) -> None:
        """The run's MLflow model: the module's weights (the tested best), or the best checkpoint's."""
        if not self.log_model or getattr(trainer.datamodule, "tensors", None) is None:
            return
        import copy

        import torch

        from lightsweep.tracking.logged_models import log_model
        from lightsweep.tracking.serving import InputSpec

        if self.spec is None:  # DDP spawn: the test runs in fresh processes, without fit's state
            self.spec = InputSpec.from_training(trainer.datamodule, pl_module)

        net = pl_module.net
        if best_checkpoint:
            state = torch.load(best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
            net = copy.deepcopy(net).cpu()
            net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
        for logger in _mlflow_loggers(trainer):
            logger.save()  # the test metrics are still queued: the model links them
            started, cpu = time.perf_counter(), time.process_time()
            model = log_model(logger.experiment, logger.run_id, net, self.spec, self.datasets or None)
            log.info(
                "MLflow model %s logged in %.2f s (CPU %.2f s)",
                model.model_id,
                time.perf_counter() - started,
                time.process_time() - cpu,
            )

    def _mistakes(self, trainer, pl_module) -> None:
        """The grid of the most confident mistakes on the tested part of the test split."""
        from lightsweep import plots
        from lightsweep.tracking.datasets import to_raw

        datamodule = trainer.datamodule
        x, y = datamodule.tensors["test"]
        batches = sum(trainer.num_test_batches) if trainer.num_test_batches else 0
        n = min(len(x), int(batches * datamodule.eval_batch_size)) if math.isfinite(batches) and batches else len(x)
        x, y = x[:n], y[:n]
        with torch.no_grad():
            logits = torch.cat(
                [
                    pl_module(x[i : i + 4096].to(pl_module.device, pl_module.dtype)).float().cpu()
                    for i in range(0, n, 4096)
                ]
            )
        probabilities = (logits.sigmoid() if logits.ndim == 1 else logits.softmax(dim=1)).numpy()
        labels = y.cpu().numpy()
        shown, _, _ = plots.most_confident_mistakes(labels, probabilities)
        if len(shown) == 0:
            return
        # Only the images it shows are recovered (with every label and probability, for its counts).
        raw = to_raw(datamodule, x[torch.as_tensor(shown, device=x.device)]).reshape(
            len(shown), *datamodule.image_shape
        )
        images = np.zeros((n, *datamodule.image_shape), dtype=raw.dtype)
        images[shown] = raw
        self.draw(
            plots.misclassified,
            images,
            labels,
            probabilities,
            datamodule.class_names,
            self.plot_dir / "misclassified.png",
        )

    def _model_plots(self, trainer, pl_module) -> None:
        """The model's own plots: a linear model's weight templates (images), the decision boundary (2-D data)."""
        from lightsweep import plots

        datamodule = trainer.datamodule
        names = datamodule.class_names
        linear = getattr(pl_module.net, "linear", None)
        if linear is not None and datamodule.image_shape and linear.out_features > 1:
            weight = linear.weight.detach().float().cpu().numpy()
            self.draw(plots.weight_templates, weight, datamodule.image_shape, names, self.plot_dir / "weights.png")
        if datamodule.input_dim == 2:
            x, y = (t.cpu() for t in datamodule.tensors["test"])
            device = pl_module.device

            def predict_proba(points):
                logits = pl_module(points.to(device, pl_module.dtype)).float().cpu()
                return logits.sigmoid() if logits.ndim == 1 else logits.softmax(dim=1)[:, 1]

            grid = plots.decision_grid(predict_proba, x)
            self.draw(
                plots.decision_boundary, grid, x.numpy(), y.numpy(), names, self.plot_dir / "decision_boundary.png"
            )


def _history(trainer) -> EpochHistory:
    return next(c for c in trainer.callbacks if isinstance(c, EpochHistory))


def _mlflow_loggers(trainer) -> list[MLFlowLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, MLFlowLogger)]
