"""Today's optimizer presets (conf/optimizer: nadamw, radam, adafactor, muon, lion, schedulefree_adamw, soap,
prodigy): each trains alone and as a member of a vectorized group; Schedule-Free optimizers validate, test
and save their eval-mode weights (lightsweep.callbacks.OptimizerModes), alone and in groups.
"""

from __future__ import annotations

import glob

import pytest
import torch
import torch.nn.functional as F
from helpers import QUIET, compose_config, run_cli, run_sweep, sweep_runs
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from test_vectorized import assert_same_checkpoint, separate_and_grouped

from lightsweep.build import build_model
from lightsweep.callbacks.schedulefree import OptimizerModes
from lightsweep.train import train

TODAY = ["nadamw", "radam", "adafactor", "muon", "lion", "schedulefree_adamw", "soap", "prodigy"]
DIGITS = ["data=digits", "logger=none", *QUIET, "trainer.log_every_n_steps=5"]
F64 = ["trainer.precision=64-true", "trainer.max_epochs=2"]


class StandIn:
    """What OptimizerModes reads of a trainer: its optimizers."""

    def __init__(self, optimizers):
        self.optimizers = optimizers


class Recorder:
    """An optimizer with modes that records its switches."""

    def __init__(self):
        self.calls: list[str] = []

    def train(self):
        self.calls.append("train")

    def eval(self):
        self.calls.append("eval")


def test_optimizer_modes_eval_from_validation_until_the_next_batch_and_after_training():
    optimizer, plain = Recorder(), torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    trainer, modes = StandIn([optimizer, plain]), OptimizerModes()
    modes.on_train_epoch_start(trainer, None)
    for batch in range(3):
        modes.on_train_batch_start(trainer, None, None, batch)
    modes.on_validation_start(trainer, None)  # (a validation within the epoch)
    modes.on_train_batch_start(trainer, None, None, 3)
    modes.on_train_batch_start(trainer, None, None, 4)
    modes.on_validation_start(trainer, None)
    modes.on_train_epoch_end(trainer, None)  # checkpoints are written now: eval weights
    modes.on_train_end(trainer, None)
    modes.on_test_start(trainer, None)
    assert optimizer.calls == ["train", "eval", "train", "eval", "eval", "eval", "eval"]


def loss_on(module, x, y) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(module(x.to(module.dtype)), y))


@pytest.mark.slow
def test_schedule_free_validates_tests_and_saves_its_eval_weights(tmp_path):
    """A single run: the weights of its last checkpoint are those it validated last (their validation loss
    is the run's), its best checkpoint's those it tested; both are the eval-mode weights (the optimizer's
    state says so, and switching it to train mode moves them)."""
    cfg = compose_config([*DIGITS, *F64, "optimizer=schedulefree_adamw", "seed=3"], tmp_path)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    result = train(cfg)
    GlobalHydra.instance().clear()
    datamodule, module = build_model(cfg)
    datamodule.setup("fit")
    datamodule.setup("test")
    module = module.double()
    split = {name: datamodule.tensors[name] for name in ("val", "test")}
    folder = tmp_path / "out" / "checkpoints"
    for name, stage in (("last.ckpt", "val"), (glob.glob(str(folder / "epoch*.ckpt"))[0], "test")):
        checkpoint = torch.load(folder / name, weights_only=True)
        module.load_state_dict(checkpoint["state_dict"])
        x, y = split[stage]
        assert loss_on(module, x, y) == pytest.approx(result[f"{stage}/loss"], rel=1e-9), name
        (state,) = checkpoint["optimizer_states"]
        assert all(group["train_mode"] is False for group in state["param_groups"])
        optimizer = module.configure_optimizers()
        optimizer.load_state_dict(state)
        optimizer.train()  # the weights it steps: not those it saved
        assert loss_on(module, x, y) != pytest.approx(result[f"{stage}/loss"], rel=1e-6), name


# The third-party presets and NAdamW (its per-step warmup), in float64, on an MLP (Muon: its weight matrices
# orthogonalized, its biases AdamW's), two Schedule-Free members among them: each member's best checkpoint
# (weights, optimizer and scheduler state) and metrics are its separate job's. The separate job validates,
# tests and saves its eval-mode weights (above), so the group does too: its Schedule-Free members are
# switched around its batched validation, its checkpoints and its test. (SOAP is left out: it computes its
# eigenbases in float32 (torch.linalg.qr has no float64 path there), where the batched forward's last-bit
# differences from a single run's change them; it trains in groups in the preset test below.)
EQUAL = ["nadamw", "muon", "lion", "schedulefree_adamw", "prodigy"]
TODAY_GROUP = [
    ["model=mlp", "model.dropout=0", "model.hidden_sizes=[16]", f"optimizer={name}", f"seed={1 + i % 2}", *F64]
    for i, name in enumerate(EQUAL)
] + [["model=mlp", "model.dropout=0", "model.hidden_sizes=[16]", "optimizer=schedulefree_adamw", "seed=1", *F64]]


@pytest.mark.slow
def test_todays_members_equal_their_separate_jobs_in_float64(tmp_path):
    pairs, results = separate_and_grouped(tmp_path, TODAY_GROUP)
    for overrides, (alone, member), result in zip(TODAY_GROUP, pairs, results):
        assert_same_checkpoint(alone, member, overrides)
        assert result["test/acc"] > 0.5, (overrides, result["test/acc"])
    for alone, member in pairs[3::2]:  # the Schedule-Free ones
        for checkpoint in (alone, member):
            assert all(g["train_mode"] is False for g in checkpoint["optimizer_states"][0]["param_groups"])


SOFTMAX_DIGITS = ["data=digits", "model=softmax", "trainer.max_epochs=5", "log_models=none"]


@pytest.mark.slow
def test_every_preset_reaches_085_on_digits_in_5_epochs_in_one_group(tmp_path):
    """Each preset at its defaults, softmax on digits, 5 epochs: >= 0.85 test accuracy, all trained as
    members of one vectorized group (third-party optimizers, parameter groups, per-step warmup, eval mode)."""
    result = run_sweep(tmp_path, "hydra/launcher=vectorized", f"optimizer={','.join(TODAY)}", *SOFTMAX_DIGITS)
    assert result.returncode == 0, result.stderr[-3000:]
    _, _, children, _ = sweep_runs(tmp_path)
    accuracy = {c.data.tags["optimizer"]: c.data.metrics["test/acc"] for c in children}
    assert sorted(accuracy) == sorted(TODAY)
    assert all(acc >= 0.85 for acc in accuracy.values()), accuracy
    assert {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags["lightsweep.vectorized"] for c in children}) == 1
    scheduled = {c.data.tags["optimizer"]: c.data.params.get("scheduler._target_") for c in children}
    assert scheduled["nadamw"] == "lightsweep.schedules.warmup_cosine"


@pytest.mark.slow
def test_a_schedule_free_single_run_from_the_command_line(tmp_path):
    """The single-run path: `python train.py optimizer=schedulefree_adamw data=digits ...` reaches 0.85 and
    logs its model (the eval-mode weights of its best checkpoint)."""
    from helpers import store

    result = run_cli(tmp_path, "optimizer=schedulefree_adamw", *SOFTMAX_DIGITS[:-1], *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    client = store(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("lightsweep").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["test/acc"] >= 0.85
    assert client.search_logged_models([run.info.experiment_id])
