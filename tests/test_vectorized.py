"""Vectorized sweeps: members trained as one model are their separate jobs, batched.

In-process: each member's config is composed as its job's (`compose_config`), the group is trained by
`train_group`, and the separate jobs by `train(cfg)`; their best checkpoints are compared.
"""

from __future__ import annotations

import glob
import signal
import subprocess
import time

import pytest
import torch
from helpers import (
    PYTHON,
    QUIET,
    ROOT,
    all_runs,
    artifact_paths,
    cli_env,
    compose_config,
    run_cli,
    run_sweep,
    sweep_runs,
)
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lightsweep.tracking.logged_models import run_model
from lightsweep.train import train
from lightsweep.vectorized.group import group_key, prepare, train_group

SMALL = ["data=digits", "logger=none", *QUIET, "trainer.log_every_n_steps=5"]


def composed(tmp_path, name: str, *overrides: str):
    cfg = compose_config([*SMALL, *overrides], tmp_path / name)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def best_checkpoint(folder) -> dict:
    (path,) = glob.glob(str(folder / "out" / "checkpoints" / "epoch*.ckpt"))
    return torch.load(path, weights_only=True)


def leaves(state) -> dict[str, object]:
    """Every value in a (nested) state dict (tensors, numbers, strings), keyed by its path."""
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return {"": state}
    return {f"{k}/{path}": leaf for k, v in items for path, leaf in leaves(v).items()}


def assert_close(alone, member, label) -> None:
    """Two state dicts with the same structure: tensors and floats within 1e-9, everything else equal."""
    a, m = leaves(alone), leaves(member)
    assert set(a) == set(m), label
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.shape == m[key].shape, (label, key)
            assert torch.allclose(value.double(), m[key].double(), rtol=0, atol=1e-9, equal_nan=True), (label, key)
        elif isinstance(value, float):
            assert value == pytest.approx(m[key], rel=1e-9, abs=1e-12), (label, key)
        else:
            assert value == m[key], (label, key)


def assert_same_checkpoint(alone: dict, member: dict, label) -> None:
    """The member's best checkpoint is its separate job's: the same weights, optimizer state and scheduler
    state (to 1e-9), the same hyperparameters, loop position and callbacks."""
    assert set(alone) == set(member), label
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_close(alone[key], member[key], (label, key))
    for key in ("epoch", "global_step", "hyper_parameters"):
        assert alone[key] == member[key], (label, key)
    # The loops stand where the job's stand; only their count of scheduler calls is the group's (it asks
    # after every batch, for the members whose schedulers step then).
    loops = [
        {k: v for k, v in c["loops"]["fit_loop"].items() if "scheduler_progress" not in k} for c in (alone, member)
    ]
    assert loops[0] == loops[1], label
    assert set(alone["callbacks"]) == set(member["callbacks"]), label


def separate_and_grouped(tmp_path, jobs: list[list[str]]):
    """Each job's best weights trained alone and as a member of one group."""
    members, keys, alone = [], set(), []
    for i, overrides in enumerate(jobs):
        alone.append(train(composed(tmp_path, f"alone{i}", *overrides)))
        cfg = composed(tmp_path, f"member{i}", *overrides)
        keys.add(group_key(cfg)[0])
        member = prepare(cfg)  # as the launcher's job does, in the job's own config (composed last)
        member.num = i
        members.append(member)
    assert len(keys) == 1 and None not in keys  # they do form one group
    results = train_group(members, "test")
    GlobalHydra.instance().clear()
    pairs = [
        (best_checkpoint(tmp_path / f"alone{i}"), best_checkpoint(tmp_path / f"member{i}")) for i in range(len(jobs))
    ]
    for separate, member in zip(alone, results):  # the same metrics, too
        for key in ("val/acc", "val/loss", "train/acc", "train/loss_epoch", "test/acc", "test/loss"):
            assert member[key] == pytest.approx(separate[key], rel=1e-6), key  # torchmetrics: float32
    return pairs, results


COMMON64 = ["trainer.precision=64-true", "trainer.max_epochs=2"]
# Every torch.optim class a group takes (conf/optimizer presets), with weight decay where the class takes
# it, on two seeds: each member's own stock optimizer over its views of the stacked weights.
EVERY_OPTIMIZER = [
    [f"optimizer={name}", *([f"optimizer.weight_decay={wd}"] if wd is not None else []), f"seed={seed}", *COMMON64]
    for name, wd, seed in [
        ("sgd", 0, 1),
        ("momentum", 0.01, 2),
        ("nesterov", 0, 1),
        ("adagrad", 0.01, 2),
        ("rmsprop", 0.01, 1),
        ("adam", 0, 2),
        ("adamw", 0.01, 1),
        ("nadam", 0.01, 2),
        ("radam", 0.01, 1),
        ("adamax", 0.01, 2),
        ("adadelta", 0.01, 1),
        ("adafactor", 0.01, 2),
        ("asgd", 0.01, 1),
        ("rprop", None, 2),  # (Rprop takes no weight decay)
    ]
]
# Each member's own LR scheduler, on its own interval: per epoch (StepLR, cosine, a warmup SequentialLR),
# per batch (OneCycleLR), on its own validation loss (ReduceLROnPlateau); each member's gradients clipped
# by their own norm, or values, as its separate job clips them.
EVERY_SCHEDULE = [
    ["optimizer=sgd", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.3", "seed=2", *COMMON64],
    ["optimizer=adam", "scheduler=cosine", "seed=1", *COMMON64],
    ["optimizer=momentum", "scheduler=warmup_cosine", "scheduler.warmup=1", "seed=1", *COMMON64],
    ["optimizer=adamw", "scheduler=onecycle", "seed=2", *COMMON64],
    ["optimizer=sgd", "optimizer.lr=1", "scheduler=plateau", "scheduler.patience=0", "seed=1", *COMMON64],
    ["optimizer=sgd", "optimizer.lr=1", "trainer.gradient_clip_val=0.05", "seed=2", *COMMON64],
    [
        "optimizer=nadam",
        "trainer.gradient_clip_val=0.001",
        "+trainer.gradient_clip_algorithm=value",
        "seed=1",
        *COMMON64,
    ],
]
# A few of them, several kinds of optimizer, schedule and clipping: the fast tier's check.
SOME_OPTIMIZERS = [EVERY_OPTIMIZER[1], EVERY_OPTIMIZER[11], EVERY_SCHEDULE[2], EVERY_SCHEDULE[4], EVERY_SCHEDULE[5]]
# Equal seed groups with the same optimizers (a comparison sweep's shape), in a shuffled job order: one
# vmapped call for both seed groups, and each update rule a strided view of the stacked weights.
SEED_BLOCKS = [
    [f"optimizer={name}", f"seed={seed}", "optimizer.weight_decay=0.01", *COMMON64]
    for name, seed in [("adam", 2), ("momentum", 1), ("adam", 1), ("momentum", 2)]
]

# The MLP (no dropout: its masks would differ) in unequal seed groups: its first layer a wide matmul per
# seed group, the layers after it per member. Logistic regression (its forward squeezes the logit): the
# whole network vmapped, the binary loss and labels.
MLP_GROUPS = [
    ["model=mlp", "model.dropout=0", "model.hidden_sizes=[64,32]", f"optimizer={name}", f"seed={seed}", *COMMON64]
    for name, seed in [("adam", 1), ("momentum", 2), ("rmsprop", 1)]
]
LOGISTIC = [["model=logistic", f"optimizer={name}", "seed=1", *COMMON64] for name in ("sgd", "adagrad")]


@pytest.mark.parametrize(
    "jobs",
    [
        SOME_OPTIMIZERS,
        SEED_BLOCKS,
        MLP_GROUPS,
        LOGISTIC,
        pytest.param(EVERY_OPTIMIZER, marks=pytest.mark.slow),
        pytest.param(EVERY_SCHEDULE, marks=pytest.mark.slow),
    ],
    ids=["some", "seed-blocks", "mlp", "logistic", "every-optimizer", "every-schedule"],
)
def test_members_equal_their_separate_jobs_in_float64(tmp_path, jobs):
    pairs, results = separate_and_grouped(tmp_path, jobs)
    for overrides, (alone, member), result in zip(jobs, pairs, results):
        assert_same_checkpoint(alone, member, overrides)
        assert {v.dtype for v in member["state_dict"].values()} == {torch.float64}
        assert 0.15 < result["test/acc"] <= 1.0, (overrides, result["test/acc"])  # it learned (chance: 0.1)


@pytest.mark.slow
def test_early_stopping_stops_each_member_as_its_job(tmp_path):
    """A member that cannot improve (lr 1e-9) stops after `patience` epochs; the others go on."""
    common = [
        "trainer.precision=64-true",
        "trainer.max_epochs=4",
        "callbacks.early_stopping.patience=1",
    ]
    jobs = [["optimizer=sgd", "optimizer.lr=1e-9", *common], ["optimizer=adam", *common]]
    pairs, results = separate_and_grouped(tmp_path, jobs)
    for alone, member in pairs:
        assert_same_checkpoint(alone, member, "early stopping")
    # Each member's last checkpoint stands where its separate job's stands: stopped, and trained on.
    last = [
        [torch.load(tmp_path / f"{kind}{i}" / "out" / "checkpoints" / "last.ckpt", weights_only=True) for i in (0, 1)]
        for kind in ("alone", "member")
    ]
    for alone, member in zip(*last):
        assert (member["epoch"], member["global_step"]) == (alone["epoch"], alone["global_step"])
    assert last[1][0]["global_step"] < last[1][1]["global_step"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "stopping",
    [
        ["+callbacks.early_stopping.stopping_threshold=0.75"],
        [
            "callbacks.early_stopping.monitor=val/loss",
            "callbacks.early_stopping.mode=min",
            "+callbacks.early_stopping.min_delta=0.05",
            "callbacks.early_stopping.patience=2",
            "+callbacks.early_stopping.divergence_threshold=2.4",
        ],
    ],
    ids=["stopping-threshold", "divergence-threshold-min-delta"],
)
def test_every_early_stopping_option_stops_each_member_as_its_job(tmp_path, stopping):
    """EarlyStopping's own code decides for each member, with its metrics: a threshold reached, a loss
    above the divergence threshold or not better by min_delta stops it at its separate job's epoch."""
    jobs = [
        [f"optimizer={name}", f"optimizer.lr={lr}", "trainer.max_epochs=5", "trainer.precision=64-true", *stopping]
        for name, lr in [("adam", 0.01), ("sgd", 0.01), ("sgd", 3.0), ("adagrad", 0.05)]
    ]
    pairs, _ = separate_and_grouped(tmp_path, jobs)
    for overrides, (alone, member) in zip(jobs, pairs):
        assert_same_checkpoint(alone, member, overrides)
    stops = set()
    for i in range(len(jobs)):
        alone, member = (
            torch.load(tmp_path / f"{kind}{i}" / "out" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
            for kind in ("alone", "member")
        )
        states = [{k: v for k, v in c.items() if k.startswith("EarlyStopping")} for c in (alone, member)]
        assert_close(states[0], states[1], jobs[i])  # wait count, best score, stopped epoch, reason
        stops.add(max(state["stopped_epoch"] for state in states[1].values()))
    assert len(stops) > 1  # the members stopped at different epochs, each at its own job's


def test_group_keys_say_who_trains_together(make_cfg):
    key = group_key(make_cfg("optimizer=sgd", "seed=1"))[0]
    assert key is not None
    assert group_key(make_cfg("optimizer=adam", "optimizer.lr=0.3", "seed=9", "scheduler=step"))[0] == key
    assert group_key(make_cfg("model=mlp"))[0] != key  # another architecture: another group
    assert group_key(make_cfg("data.batch_size=64"))[0] != key
    for overrides, why in [
        (["trainer=ddp_cpu"], "several devices"),
        (["+trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches"),
        (["+callbacks.mine._target_=pytorch_lightning.callbacks.Timer"], "callbacks.mine"),
        (["optimizer._target_=torch.optim.LBFGS"], "LBFGS"),
        (["callbacks.early_stopping.monitor=test/acc"], "callbacks.early_stopping.monitor"),
    ]:
        none, reason = group_key(make_cfg(*overrides))
        assert none is None and why in reason, (overrides, reason)


@pytest.mark.slow
def test_a_vectorized_sweep_lands_as_ordinary_children(tmp_path):
    """The CLI with hydra/launcher=vectorized: one group, a diverging member FAILED alone, the others
    FINISHED with the usual metrics, plots and a checkpoint the single model loads."""
    result = run_sweep(
        tmp_path,
        "hydra/launcher=vectorized",
        "optimizer=sgd",
        "optimizer.lr=0.05,1e12,0.1",
        "model=mlp",
        "log_models=all",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=8",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=4",
    )
    assert result.returncode == 1, result.stderr[-3000:]  # a job failed ...
    assert "3 jobs, 1 failed (1 diverged)" in result.stdout
    assert "Group of 3 jobs (#0,1,2), trained as one model" in result.stdout + result.stderr
    client, parents, children, _ = sweep_runs(tmp_path)
    status = {c.info.run_name: c.info.status for c in children}
    assert status == {
        "mlp-sgd-lr0.05-s42": "FINISHED",
        "mlp-sgd-lr1e+12-s42": "FAILED",
        "mlp-sgd-lr0.1-s42": "FINISHED",
    }
    assert parents[0].info.status == "FINISHED"  # ... not every job
    for child in children:
        assert child.data.tags["lightsweep.vectorized"] == "0-2"
        if child.info.status == "FAILED":
            assert child.data.tags["lightsweep.diverged"] == "true"
            continue
        assert {"train/loss", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "test/acc", "test/loss"} <= set(
            child.data.metrics
        )
        assert len(client.get_metric_history(child.info.run_id, "val/acc")) == 2
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")] == [3, 7, 11, 15]
        files = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert {"plots/learning_curves.png", "plots/confusion_matrix.png"} <= files
        (ckpt,) = [a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")]
        from lightsweep.models import MLPClassifier

        model = MLPClassifier.load_from_checkpoint(client.download_artifacts(child.info.run_id, ckpt, str(tmp_path)))
        assert model.net[0].weight.shape == (256, 784)
        assert run_model(client, child) is not None  # log_models=all: each member logs its MLflow model


@pytest.mark.slow
def test_optuna_batches_train_vectorized_and_score_their_trials(tmp_path):
    """The Optuna sweeper hands the launcher `n_jobs` trials at a time: each batch is one group, and each
    trial's score is its own member's validation accuracy."""
    result = run_sweep(
        tmp_path,
        "hparams_search=lr_optuna",
        "hydra/launcher=vectorized",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=8",
        "trainer.limit_val_batches=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("trained as one model") == 2  # two batches of two trials
    client, parents, children, _ = sweep_runs(tmp_path)
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["lightsweep.vectorized"] for c in children} == {"0-1", "2-3"}
    best = max(c.data.metrics["val/acc"] for c in children)
    assert f"Best value: {best}" in output or f"Best value: {best:.6g}"[:16] in output, output[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_vectorized_sweep_with_every_member_killed(tmp_path, stop):
    process = subprocess.Popen(
        [PYTHON, "train.py", "-m", "hydra/launcher=vectorized", "optimizer=sgd,adam", "trainer.max_epochs=500"]
        + [
            "trainer.limit_train_batches=50",
            "trainer.limit_val_batches=2",
            f"paths.log_dir={tmp_path}/outputs",
            *QUIET,
        ],
        cwd=ROOT,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120  # until both jobs are prepared (their .hydra files written)
    while not list((tmp_path / "outputs").glob("multiruns/*/1-*/.hydra/config.yaml")):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    time.sleep(5)  # into the group's training
    process.send_signal(stop)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop.value, stderr[-3000:]
    assert time.monotonic() - sent < 15
    assert f"interrupted ({stop.name})" in stderr and "Traceback" not in stderr, stderr[-3000:]
    _, parents, children, _ = sweep_runs(tmp_path)
    assert [c.info.status for c in children] == ["KILLED", "KILLED"]
    assert all(c.data.tags["lightsweep.failure_reason"] == f"interrupted ({stop.name})" for c in children)
    assert parents[0].info.status == "FAILED"


def optimizer_yamls(folder) -> list[str]:
    """Every torch.optim class a group takes, as one user's YAML each (`optimizer/ext_<name>.yaml` under
    `folder`), with torch's defaults; list values (betas) written as lists, as users write them."""
    import inspect

    names = []
    for name, cls in vars(torch.optim).items():
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
            continue
        if name in ("LBFGS", "SparseAdam", "Muon"):  # a closure; sparse gradients; 2-D parameters only
            continue
        defaults = inspect.signature(cls).parameters
        lines = [f"_target_: torch.optim.{name}", "_partial_: true", f"lr: {float(defaults['lr'].default)}"]
        if "betas" in defaults:
            lines.append(f"betas: {list(defaults['betas'].default)}")
        (folder / "optimizer").mkdir(parents=True, exist_ok=True)
        (folder / "optimizer" / f"ext_{name.lower()}.yaml").write_text("\n".join(lines) + "\n")
        names.append(f"ext_{name.lower()}")
    return sorted(names)


SWEEP_TINY = [
    "data=digits",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


@pytest.mark.slow
def test_any_optimizer_a_user_adds_as_one_yaml_trains_alone_and_in_a_group(tmp_path):
    """A user's own config directory (`hydra.searchpath`), one YAML per torch.optim class: each trains
    FINISHED as a single run and as a member of one group (its stock optimizer, batched)."""
    names = optimizer_yamls(tmp_path / "user_conf")
    assert len(names) == 12
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'user_conf'}]"
    single = run_cli(tmp_path / "single", searchpath, "optimizer=ext_nadam", *SWEEP_TINY, *QUIET)
    assert single.returncode == 0, single.stderr[-3000:]  # NAdam's betas list: its checkpoint loads to test
    for launcher in ("basic", "vectorized"):
        result = run_sweep(
            tmp_path / launcher, f"hydra/launcher={launcher}", searchpath, f"optimizer={','.join(names)}", *SWEEP_TINY
        )
        assert result.returncode == 0, result.stderr[-3000:]
        _, _, children, _ = sweep_runs(tmp_path / launcher)
        assert sorted(c.data.tags["optimizer"] for c in children) == names
        assert {c.info.status for c in children} == {"FINISHED"}
        if launcher == "vectorized":
            assert "runs alone" not in result.stdout + result.stderr
            assert {c.data.tags["lightsweep.vectorized"] for c in children} == {f"0-{len(names) - 1}"}


@pytest.mark.slow
def test_a_member_run_holds_what_its_basic_twin_holds(tmp_path):
    """The same two jobs, swept job by job and vectorized (float64, Fashion-MNIST slices): each member's run
    has its twin's artifact files, dataset inputs, param keys, metric keys and steps, and model; its best
    checkpoint is a single run's, which `load_from_checkpoint` loads and a single run continues."""
    from mlflow.tracking import MlflowClient

    from lightsweep.models import SoftmaxRegression

    common = [
        "optimizer=adam,nadam",
        "log_models=all",
        "trainer.precision=64-true",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=2",
    ]
    runs = {}
    for launcher in ("basic", "vectorized"):
        result = run_sweep(tmp_path / launcher, f"hydra/launcher={launcher}", *common)
        assert result.returncode == 0, result.stderr[-3000:]
        client, _, children, _ = sweep_runs(tmp_path / launcher)
        runs[launcher] = (client, {c.info.run_name: client.get_run(c.info.run_id) for c in children})
    (basic_client, basic), (client, vectorized) = runs["basic"], runs["vectorized"]
    assert set(basic) == set(vectorized) == {"softmax-adam-lr0.001-s42", "softmax-nadam-lr0.002-s42"}
    for name, twin in basic.items():
        member = vectorized[name]
        assert member.info.status == twin.info.status == "FINISHED"
        assert member.data.tags["lightsweep.vectorized"] == "0-1" and "lightsweep.vectorized" not in twin.data.tags
        assert artifact_paths(client, member.info.run_id) == artifact_paths(basic_client, twin.info.run_id)
        assert set(member.data.params) == set(twin.data.params)
        inputs = [
            [(i.dataset.name, i.dataset.digest, tuple(t.value for t in i.tags)) for i in r.inputs.dataset_inputs]
            for r in (member, twin)
        ]
        assert sorted(inputs[0]) == sorted(inputs[1]) and len(inputs[0]) == 3
        assert set(member.data.metrics) == set(twin.data.metrics)
        for key in twin.data.metrics:
            steps = [
                [m.step for m in c.get_metric_history(r.info.run_id, key)]
                for c, r in ((client, member), (basic_client, twin))
            ]
            assert steps[0] == steps[1], (name, key)
        models = [run_model(c, r) for c, r in ((client, member), (basic_client, twin))]
        assert all(models) and models[0].name == models[1].name
        files = [
            {a.path for a in c.list_logged_model_artifacts(m.model_id)} for c, m in zip((client, basic_client), models)
        ]
        assert files[0] == files[1]
    # The member's best checkpoint: a single run's, which a single run continues (ckpt_path=).
    (ckpt,) = [a.path for a in client.list_artifacts(vectorized["softmax-adam-lr0.001-s42"].info.run_id, "checkpoints")]
    local = client.download_artifacts(vectorized["softmax-adam-lr0.001-s42"].info.run_id, ckpt, str(tmp_path))
    loaded = SoftmaxRegression.load_from_checkpoint(local)
    saved = torch.load(local, weights_only=True)["state_dict"]["net.linear.weight"]
    assert torch.equal(loaded.net.linear.weight.detach(), saved.to(torch.float32))
    more = run_cli(
        tmp_path / "continued",
        f"ckpt_path={local}",
        "optimizer=adam",
        "trainer.precision=64-true",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        *QUIET,
    )
    assert more.returncode == 0, more.stderr[-3000:]
    continued = MlflowClient(f"sqlite:///{tmp_path / 'continued'}/store/mlflow.db")
    (run,) = all_runs(continued)
    assert run.info.status == "FINISHED"
    epochs = [m.value for m in continued.get_metric_history(run.info.run_id, "epoch")]
    assert min(epochs) >= 1  # it went on from the member's epoch, not from scratch


@pytest.mark.slow
def test_a_pruned_member_stops_and_the_rest_of_its_group_trains_on(tmp_path):
    """An Optuna study's batch of trials trains as one group: a hopeless member (lr < 1e-4) is pruned after
    its first epoch (FINISHED, tagged, its trial PRUNED), the others in its group train every epoch."""
    import optuna
    from optuna.trial import TrialState

    result = run_sweep(
        tmp_path,
        "hydra/launcher=vectorized",
        "data=digits",
        "hparams_search=lr_optuna",
        "trainer.max_epochs=3",
        "trainer.limit_val_batches=2",
        "optimizer=sgd",
        "optimizer.lr=tag(log, interval(1e-7, 1.0))",
        "optimizer.weight_decay=0",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=3",
        "hydra/sweeper/sampler=qmc",
        "hydra.sweeper.sampler.seed=0",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("trained as one model") == 2
    client, _, children, _ = sweep_runs(tmp_path)
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/store/optuna.db")
    trials = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{tmp_path}/store/optuna.db").trials
    runs = {c.info.run_id: c for c in children}
    second = trials[3:]  # one group, after 3 complete trials
    pruned = [t for t in second if t.state == TrialState.PRUNED]
    assert {t.number for t in second if t.params["optimizer.lr"] < 1e-4} <= {t.number for t in pruned}
    assert 0 < len(pruned) < len(second)
    for trial in second:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["lightsweep.vectorized"] == "3-5"
        epochs = len(client.get_metric_history(run.info.run_id, "val/acc"))
        if trial.state == TrialState.PRUNED:
            assert run.data.tags["lightsweep.pruned"] == "true" and epochs == 1
        else:
            assert "lightsweep.pruned" not in run.data.tags and epochs == 3


def test_a_group_checkpoint_refuses_other_members(tmp_path):
    """A group's own checkpoint holds every member's optimizer state, in order: Lightning restores
    optimizers with a zip, so one saved for other members is refused in one line, not loaded silently."""
    from lightsweep.errors import LightsweepError
    from lightsweep.vectorized.module import StackedClassifier
    from lightsweep.vectorized.optimizers import MemberOptimizers

    jobs = [["optimizer=adam", "trainer.max_epochs=1"], ["optimizer=sgd", "trainer.max_epochs=1"]]
    members = []
    for i, overrides in enumerate(jobs):
        member = prepare(composed(tmp_path, f"member{i}", *overrides))
        member.num = i
        members.append(member)
    train_group(members, "test")
    GlobalHydra.instance().clear()
    (path,) = glob.glob(str(tmp_path / "*" / "group-test" / "last.ckpt"))
    saved = torch.load(path, weights_only=True)
    assert [s["label"] for s in saved["lightsweep_members"]] == ["job 0 (not tracked)", "job 1 (not tracked)"]
    assert len(saved["optimizer_states"][0]["states"]) == 2  # each member's own optimizer state

    others = []
    for i, overrides in enumerate([*jobs, ["optimizer=adagrad"]]):
        member = prepare(composed(tmp_path, f"other{i}", *overrides))
        member.num = i
        others.append(member)
    module = StackedClassifier(others, [0, 0, 0])
    with pytest.raises(LightsweepError, match="saved for other members"):
        module.on_load_checkpoint(saved)
    module.bind()
    for member in others:
        member.configure()
    with pytest.raises(LightsweepError, match=r"job 0 \(not tracked\), job 1 \(not tracked\)\), not job 0"):
        MemberOptimizers(module.weights, others).load_state_dict(saved["optimizer_states"][0])
