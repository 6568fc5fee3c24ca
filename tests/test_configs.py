"""Every option of every config group composes, instantiates and passes validation."""

from __future__ import annotations

import pytest
from helpers import CONF
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from lightsweep.build import build_model
from lightsweep.config import choose_binary_task, validate
from lightsweep.errors import LightsweepError


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_groups_have_the_promised_options():
    assert options("model") == ["logistic", "mlp", "softmax"]
    assert set(options("data")) >= {
        "fashion_mnist",
        "mnist",
        "digits",
        "xor",
        "iris",
        "wine",
        "breast_cancer",
        "moons",
        "circles",
    }
    classic = {"adagrad", "adam", "adamw", "momentum", "nesterov", "rmsprop", "sgd"}
    assert set(options("optimizer")) >= classic | {"nadam", "radam", "adamax", "adadelta", "adafactor", "asgd", "rprop"}
    today = {"nadamw", "radam", "adafactor", "muon", "lion", "schedulefree_adamw", "soap", "prodigy"}
    assert set(options("optimizer")) >= today
    assert set(options("scheduler")) >= {
        "cosine",
        "default",
        "none",
        "step",
        "warmup_cosine",
        "warmup_cosine_steps",
        "onecycle",
        "plateau",
    }
    assert set(options("trainer")) >= {"default", "cpu", "gpu", "ddp_cpu"}
    assert set(options("logger")) == {"mlflow", "mlflow_server", "none"}


@pytest.mark.parametrize("name", options("optimizer"))
def test_optimizer_options_build_their_optimizers(make_cfg, name):
    """Each preset builds its optimizer as a run does (lightsweep's keys, `param_groups` and `search_space`,
    are not the optimizer's), over an MLP's parameters, with the preset's values."""
    decay = "weight_decay" in make_cfg(f"optimizer={name}").optimizer  # (Rprop takes none)
    cfg = make_cfg(f"optimizer={name}", "model=mlp", *(["optimizer.weight_decay=0.01"] if decay else []))
    validate(cfg)
    _, model = build_model(cfg)
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr
    if decay:
        assert optimizer.param_groups[0]["weight_decay"] == 0.01
    if name in ("momentum", "nesterov"):
        assert optimizer.param_groups[0]["momentum"] == 0.9
        assert optimizer.param_groups[0]["nesterov"] == (name == "nesterov")


@pytest.mark.parametrize("name", options("scheduler"))
def test_scheduler_options(make_cfg, name):
    import torch

    cfg = make_cfg(f"scheduler={name}", "trainer.max_epochs=5")  # (warmup_cosine: 2 epochs of warmup)
    if name in ("none", "default"):  # softmax's default: constant
        assert not cfg.scheduler
        return
    _, model = build_model(cfg)  # the scheduler as a run builds it, with Lightning's keys for it
    configured = model.configure_optimizers()["lr_scheduler"]
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
    assert isinstance(configured["scheduler"], (torch.optim.lr_scheduler.LRScheduler, plateau))
    assert configured["interval"] == cfg.scheduler.get("interval", "epoch")
    assert configured.get("monitor") == cfg.scheduler.get("monitor")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model=mlp"], "CosineAnnealingLR"),  # the MLP's own default (conf/model_scheduler/mlp_default.yaml)
        (["model=mlp", "scheduler=none"], None),  # a choice on the command line wins
        (["model=mlp", "scheduler=step"], "StepLR"),
        (["model=softmax"], None),
        (["model=logistic", "scheduler=cosine"], "CosineAnnealingLR"),
    ],
)
def test_a_model_picks_its_default_schedule_and_the_command_line_wins(make_cfg, overrides, expected):
    cfg = make_cfg(*overrides)
    assert (cfg.scheduler._target_.rsplit(".", 1)[-1] if cfg.scheduler else None) == expected
    assert cfg.model._target_.endswith(
        {"model=mlp": "MLPClassifier", "model=softmax": "SoftmaxRegression", "model=logistic": "LogisticRegression"}[
            overrides[0]
        ]
    )


@pytest.mark.parametrize(
    "overrides, lr, monitor",
    [
        (["data=iris"], 0.03, ("val/loss", "min")),  # conf/data_optimizer/iris_adam.yaml, data_callbacks/iris_default
        (["data=digits"], 0.03, ("val/acc", "max")),
        (["data=fashion_mnist"], 1e-3, ("val/acc", "max")),
        (["data=circles"], 1e-3, ("val/acc", "max")),
        (["data=iris", "optimizer=sgd"], 0.1, ("val/loss", "min")),  # another optimizer keeps its own lr
        (["data=iris", "optimizer.lr=0.001"], 0.001, ("val/loss", "min")),  # the command line wins
        (
            ["data=wine", "callbacks.model_checkpoint.monitor=val/acc", "callbacks.model_checkpoint.mode=max"],
            0.03,
            None,
        ),
        (["data=moons", "experiment=moons_mlp"], 0.01, None),  # a preset wins (and drops the checkpoint)
        (["data=breast_cancer", "debug=fast"], 0.03, ("val/loss", "min")),
    ],
)
def test_a_data_set_picks_its_training_settings_and_the_command_line_wins(make_cfg, overrides, lr, monitor):
    cfg = make_cfg(*overrides)
    assert cfg.optimizer.lr == lr
    checkpoint = cfg.callbacks.model_checkpoint
    if monitor is not None:
        assert (checkpoint.monitor, checkpoint.mode) == monitor
    elif checkpoint is not None:
        assert (checkpoint.monitor, checkpoint.mode) == ("val/acc", "max")
    validate(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data=iris", "callbacks.model_checkpoint.monitor=val/acc"], "callbacks.model_checkpoint.mode=max too"),
        (["callbacks.model_checkpoint.monitor=val/loss"], "callbacks.model_checkpoint.mode=min too"),
        (["callbacks.early_stopping.mode=min"], "callbacks.early_stopping.monitor=val/acc with mode=min"),
    ],
)
def test_a_monitor_with_the_other_mode_is_one_line(make_cfg, overrides, message):
    with pytest.raises(LightsweepError, match=message) as info:
        validate(make_cfg(*overrides))
    assert "\n" not in str(info.value)


# data option -> (input_dim, num_classes)
SIZES = {
    "fashion_mnist": (784, 10),
    "mnist": (784, 10),
    "digits": (64, 10),
    "xor": (2, 2),
    "moons": (2, 2),
    "circles": (2, 2),
    "iris": (4, 3),
    "wine": (13, 3),
    "breast_cancer": (30, 2),
}


@pytest.mark.parametrize("data", SIZES)
@pytest.mark.parametrize("model", options("model"))
def test_sizes_flow_from_data_into_model(make_cfg, data, model):
    cfg = make_cfg(f"data={data}", f"model={model}")
    choose_binary_task(cfg)
    validate(cfg)
    expected_dim, classes = SIZES[data]
    assert cfg.model.input_dim == expected_dim
    module = instantiate(cfg.model)
    first_layer = next(p for p in module.net.parameters() if p.ndim == 2)
    assert first_layer.shape[1] == expected_dim
    if model == "logistic":
        assert cfg.data.num_classes == 2
    else:
        assert cfg.model.num_classes == cfg.data.num_classes == classes


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_variants_inherit_default(make_cfg, name):
    cfg = make_cfg(f"trainer={name}")
    assert cfg.trainer.max_epochs == 2  # FAST override reaches every variant
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if name in ("default", "cpu"):
        trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.max_epochs == 2


def test_callbacks_are_named_and_droppable(make_cfg):
    cfg = make_cfg()
    assert {"model_checkpoint", "early_stopping", "stop_on_divergence"} <= set(cfg.callbacks)
    assert cfg.callbacks.model_checkpoint.dirpath == f"{cfg.paths.output_dir}/checkpoints"
    cfg = make_cfg("callbacks.early_stopping=null")
    assert cfg.callbacks.early_stopping is None


@pytest.mark.parametrize("name", options("debug"))
def test_debug_presets(make_cfg, name):
    cfg = make_cfg(f"debug={name}", fast=False)
    assert cfg.trainer.max_epochs == 1


@pytest.mark.parametrize("name", options("experiment"))
def test_experiments_compose_and_validate(make_cfg, name):
    cfg = make_cfg(f"experiment={name}")
    choose_binary_task(cfg)
    validate(cfg)


def test_logistic_on_fashion_mnist_defaults_to_tshirt_vs_shirt(make_cfg):
    cfg = make_cfg("model=logistic")
    choose_binary_task(cfg)
    assert list(cfg.data.classes) == ["T-shirt/top", "Shirt"]
    assert cfg.data.num_classes == 2


def test_mlflow_uri_env_overrides_default(make_cfg, monkeypatch, tmp_path):
    cfg = make_cfg()
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'mlruns'}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert make_cfg().logger.mlflow.tracking_uri == "http://127.0.0.1:5999"


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("postgresql://user:pw@db.example/mlflow", "postgresql://user:***@db.example/mlflow"),
        ("mysql+pymysql://u:p%40ss@db:3306/mlflow", "mysql+pymysql://u:***@db:3306/mlflow"),
        ("http://alice:s3cret@mlflow.example:5000/x?y=1", "http://alice:***@mlflow.example:5000/x?y=1"),
        ("https://bob:pw@[::1]:5000", "https://bob:***@[::1]:5000"),
        ("http://user:p@ss@host/x", "http://***@host/x"),  # a raw @ in the password: nothing of it shown
        ("http://user:pw@host:port/x", "http://***@host:port/x"),  # no URL for SQLAlchemy (bad port)
        ("see http://user:pw@host for details", "see http://***@host for details"),
        ("http://user@host:5000", "http://user@host:5000"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/at@sign/mlflow.db", "sqlite:////tmp/at@sign/mlflow.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),  # no password: the URI as given, not re-quoted
        ("file:///tmp/mlruns", "file:///tmp/mlruns"),
        ("/tmp/mlruns", "/tmp/mlruns"),
        ("databricks", "databricks"),
    ],
)
def test_uris_are_shown_without_their_password(uri, shown):
    from lightsweep.tracking.uris import describe

    assert describe(uri) == shown


def test_unknown_group_option_is_a_composition_error(make_cfg):
    with pytest.raises(ConfigCompositionException, match="model/resnet"):
        make_cfg("model=resnet")


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.lr=-1", "optimizer.lr must be > 0"),
        ("optimizer.lr=abc", "optimizer.lr must be a number"),
        ("optimizer.lr=nan", "optimizer.lr must be finite"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay must be >= 0"),
        ("data.val_size=1.5", "data.val_size must be < 1"),
        ("data.val_size=0", "data.val_size must be > 0"),
        ("data.batch_size=0", "data.batch_size must be > 0"),
        ("data.classes=[Shirt]", "data.classes needs at least 2"),
        ("data.classes=[Shirt,Jacket]", "unknown class 'Jacket'"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be > 0"),
        ("seed=1.5", "seed must be a whole number"),
        ("seed=-1", "seed must be >= 0"),
        ("trainer.max_epochs=nan", "trainer.max_epochs must be finite"),
        ("trainer.log_every_n_steps=2.5", "trainer.log_every_n_steps must be a whole number"),
        ("data.split_seed=-1", "data.split_seed must be >= 0"),
        ("data.standardize=minmax", "data.standardize must be global or feature"),
        ("plots=maybe", "plots must be True or False"),
        ("scheduler=step scheduler.step_size=0", "scheduler.step_size must be > 0"),
        ("scheduler=cosine scheduler.T_max=0", "scheduler.T_max must be > 0"),
        ("optimizer=sgd optimizer.momentum=-0.5", "optimizer.momentum must be >= 0"),
        ("optimizer=sgd optimizer.nesterov=true", "optimizer.nesterov=true needs optimizer.momentum > 0"),
    ],
)
def test_bad_values_give_one_clear_error(make_cfg, override, message):
    cfg = make_cfg(*override.split())
    with pytest.raises(LightsweepError, match=message) as info:
        choose_binary_task(cfg)
        validate(cfg)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=mlp", "model.hidden_sizes=[]"], "model.hidden_sizes must be a non-empty list"),
        (["model=mlp", "model.hidden_sizes=[64,0]"], r"model.hidden_sizes\[\] must be > 0"),
        (["model=mlp", "model.activation=gelu"], "model.activation must be relu, sigmoid or tanh"),
        (["model=softmax", "model.loss=hinge"], "model.loss must be ce or mse"),
        (["model=mlp", "model.dropout=1"], "model.dropout must be < 1"),
        (["model=softmax", "model.label_smoothing=-0.1"], "model.label_smoothing must be >= 0"),
        (["model=mlp", "model.hidden_sizes=8"], "model.hidden_sizes must be a non-empty list"),
        (["model=logistic", "data.classes=[Shirt,Bag,Coat]"], "the binary model needs 2 classes"),
        (["model=logistic", "data=xor", "data.classes=[0,1]", "data.positive_class=1"], None),
    ],
)
def test_bad_model_values(make_cfg, overrides, message):
    cfg = make_cfg(*overrides)
    if message is None:
        choose_binary_task(cfg)
        validate(cfg)
        return
    with pytest.raises(LightsweepError, match=message):
        choose_binary_task(cfg)
        validate(cfg)


def test_a_bad_parameter_group_rule_is_one_line_and_exit_2(make_cfg, capsys):
    from helpers import cli_error

    cfg = make_cfg("optimizer=muon", "optimizer.param_groups=[{select:{rank:2},use_muon:true}]", "logger=none")
    assert cli_error(cfg, capsys) == (
        "error: optimizer.param_groups[0].select.rank is not a selector: use ndim, name, role"
    )
