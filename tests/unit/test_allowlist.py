"""lightsweep.allowlist: which targets a stored config may build. No store, no training."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lightsweep.allowlist import UntrustedConfig, check, conf_targets, is_allowed, targets_in


class ThirdPartyOptimizer(torch.optim.SGD):
    """An optimizer from outside torch and lightsweep (pytorch-optimizer, schedulefree, ...)."""


class ThirdPartyScheduler(torch.optim.lr_scheduler.LambdaLR):
    pass


@pytest.mark.parametrize(
    "target",
    [
        "lightsweep.models.SoftmaxRegression",  # lightsweep's models and data modules, by any of their paths
        "lightsweep.data.sklearn_sets.SklearnDataModule",
        "lightsweep.models.networks.MLP",  # a network: a torch module
        "lightsweep.data.make_xor",  # a function, but one conf/data names
        "sklearn.datasets.load_iris",
        "torch.optim.NAdam",  # every optimizer and LR scheduler, named in conf/ or not
        "torch.optim.lr_scheduler.OneCycleLR",
        "torch.optim.lr_scheduler.ReduceLROnPlateau",
        f"{__name__}.ThirdPartyOptimizer",
        f"{__name__}.ThirdPartyScheduler",
    ],
)
def test_what_a_training_config_names_is_allowed(target):
    assert is_allowed(target)


@pytest.mark.parametrize(
    "target",
    [
        "pathlib.Path.write_text",
        "pathlib.Path",
        "os.system",
        "builtins.exec",
        "lightsweep.config.Path",  # a class lightsweep imports is not lightsweep's
        "lightsweep.tracking.logger.MLFlowLogger",  # opens a store (a sqlite file) wherever it is told
        "lightsweep.sweeps.context.SweepContext",  # lightsweep's, but neither a model nor data
        "pytorch_lightning.callbacks.ModelCheckpoint",  # conf/callbacks: never built from a stored config
        "pytorch_lightning.Trainer",
        "lightsweep.tracking.logged_models.log_model",  # lightsweep's functions only where conf/ names them
        "lightsweep.sweeps.context.SweepContext.write",
        "torch.nn.Linear",
        "torch.save",
        "numpy.save",
        "sklearn.datasets.fetch_openml",  # downloads: not named in conf/
        "no_such_package.Thing",
        "",
    ],
)
def test_anything_else_is_refused(target):
    assert not is_allowed(target)


def test_a_standard_library_target_is_refused_without_importing_it():
    code = "import sys; from lightsweep.allowlist import is_allowed; print(is_allowed('antigravity.x'), 'antigravity' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_users_list_adds_names_and_packages():
    assert is_allowed("torch.nn.Linear", ["torch.nn.Linear"])
    assert is_allowed("torch.nn.Conv2d", ["torch.nn.*"])
    assert not is_allowed("torch.nnx.Thing", ["torch.nn.*"])
    assert not is_allowed("torch.nn.Linear", ["torch.nn.Linea"])


def test_conf_targets_are_those_of_the_groups_a_model_and_its_data_come_from():
    assert {"torch.optim.Adam", "sklearn.datasets.load_digits", "lightsweep.models.MLPClassifier"} <= conf_targets()
    assert "torch.optim.lr_scheduler.StepLR" in conf_targets()
    assert not any(t.startswith(("pytorch_lightning.", "optuna.", "lightsweep.tracking")) for t in conf_targets())


@pytest.mark.parametrize(
    "node, key",
    [
        (
            {"_target_": "torch.optim.SGD", "params": {"_target_": "os.system", "_args_": ["true"]}},
            "model.params._target_",
        ),
        (
            {"_target_": "lightsweep.models.SoftmaxRegression", "_args_": [{"_target_": "os.system"}]},
            r"model._args_\[0\]",
        ),
        ({"_target_": "pathlib.Path.write_text", "_partial_": True}, "model._target_"),
        ({"layers": [{"inner": {"_target_": "builtins.eval"}}]}, r"model.layers\[0\].inner._target_"),
        ({"_target_": {"nested": "dict"}}, "model._target_"),
        ({"_target_": "torch.optim.SGD", "lr": "${oc.env:HOME}"}, "model.lr=\\$\\{oc.env"),
    ],
)
def test_check_walks_the_whole_tree_and_names_the_key(node, key):
    with pytest.raises(UntrustedConfig, match=f"refusing run x's config.yaml: {key}") as info:
        check(node, "run x's config.yaml", "model")
    assert "\n" not in str(info.value)


def test_a_stored_training_config_passes():
    from omegaconf import OmegaConf

    from lightsweep.config import project_root

    config = OmegaConf.load(project_root() / "conf" / "optimizer" / "adam.yaml")
    check(config, "adam.yaml", "optimizer")
    assert targets_in({"a": {"_target_": "x.Y"}, "b": [{"_target_": "z.W"}]}) == ["x.Y", "z.W"]
