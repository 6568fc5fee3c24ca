"""Vectorized vs basic launcher: the same sweep, both launchers, one run of this script, one machine.

    python benchmarks/vectorized.py                       # softmax, 7 optimizers x 3 seeds, 20 epochs
    python benchmarks/vectorized.py --model mlp --epochs 5
    python benchmarks/vectorized.py --repeat 3            # each launcher 3 times, alternating: medians
    python benchmarks/vectorized.py --floor --repeat 5    # only the matmul bound and the floor, no sweeps

Prints each launcher's wall time and peak RSS (the sweep's process), their ratio (median, min and max
over the repeats), and:
- the per-member epoch cost against the matmul bound of the same batched shapes (the forward and
  weight-gradient matmuls of one epoch, timed alone), and the loss's own kernels on the members'
  logits (log-softmax, its backward, argmax) and Lightning's own loop (an empty `training_step`),
  which no step can skip;
- where a member's training step goes (forward+backward, the members' own optimizers' steps, the rest:
  Lightning and Python), measured on the same shapes, and the optimizer's share of a group step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = "sgd,momentum,nesterov,adagrad,rmsprop,adam,adamw"
QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


def sweep(launcher: str, args, folder: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of `train.py -m` with `launcher`."""
    command = [
        sys.executable,
        "train.py",
        "-m",
        f"hydra/launcher={launcher}",
        f"model={args.model}",
        f"optimizer={args.optimizers}",
        f"seed={args.seeds}",
        f"trainer.max_epochs={args.epochs}",
        f"paths.log_dir={folder}/outputs",
        *QUIET,
        *args.extra,
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{launcher} sweep failed:\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1e6


def triple(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def spread(values: tuple[float, float, float]) -> str:
    """ "median [min, max]" of an epoch-time triple."""
    return f"{values[0]:.3f} [{values[1]:.3f}, {values[2]:.3f}]"


def timed(fn, repeat: int = 5) -> tuple[float, float, float]:
    """(median, min, max) seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), max(times)


def shapes(args):
    """Members, seed groups, steps per epoch and layer sizes of the benchmarked sweep."""
    members = len(args.optimizers.split(",")) * len(args.seeds.split(","))
    seeds = len(args.seeds.split(","))
    steps = -(-55000 // 128)  # Fashion-MNIST's 60k minus the 5k validation split, batch 128
    layers = [784, 10] if args.model == "softmax" else [784, 256, 128, 10]
    return members, seeds, steps, layers


def matmul_bound(args) -> float:
    """Seconds per member-epoch of the forward and weight-gradient matmuls alone, in the shapes the
    vectorized module runs: the first layer as one wide matmul per seed group (its members share the
    batch), the next layers as batched matmuls (each member has its own activations)."""
    import torch

    members, seeds, steps, layers = shapes(args)
    b, per_group = 128, members // seeds
    x0 = torch.randn(b, layers[0])
    w0 = torch.randn(layers[0], per_group * layers[1])
    g0 = torch.randn(b, per_group * layers[1])
    x = [torch.randn(members, b, n) for n in layers[1:-1]]
    w = [torch.randn(members, n, m) for n, m in zip(layers[1:-1], layers[2:])]
    g = [torch.randn(members, b, m) for m in layers[2:]]

    def step():
        for _ in range(seeds):
            x0 @ w0  # forward
            x0.T @ g0  # weight gradient
        for xi, wi, gi in zip(x, w, g):
            torch.bmm(xi, wi)
            torch.bmm(xi.transpose(1, 2), gi)

    median, _, _ = timed(step, repeat=20)
    return median * steps / members


def loss_kernels(args) -> float:
    """Seconds per member-epoch of the kernels that the loss and the accuracy run on the members'
    logits, besides the matmuls, in the same shapes: log-softmax, its backward, argmax. No step can
    skip them, so the bound plus these is a floor for the epoch cost."""
    import torch

    members, _, steps, layers = shapes(args)
    logits = torch.randn(members, 128, layers[-1], requires_grad=True)
    upstream = torch.randn(members, 128, layers[-1])

    def step():
        torch.autograd.grad(torch.log_softmax(logits, -1), logits, upstream)
        logits.detach().argmax(-1)

    median, _, _ = timed(step, repeat=50)
    return median * steps / members


def lightning_loop(args) -> float:
    """Seconds per member-epoch of Lightning's own loop: a Trainer running an empty manual-optimization
    `training_step` over as many batches as an epoch has (the median of 5 epochs). Every vectorized
    step runs inside this loop."""
    import pytorch_lightning as pl
    import torch

    members, _, steps, _ = shapes(args)
    epochs: list[float] = []

    class Empty(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            pass

        def on_train_epoch_start(self):
            self.started = time.perf_counter()

        def on_train_epoch_end(self):
            epochs.append(time.perf_counter() - self.started)

        def configure_optimizers(self):
            return torch.optim.SGD([self.weight], lr=0.1)

    batches = torch.utils.data.DataLoader(torch.zeros(steps, 1), batch_size=None)  # no collation: one tensor each
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    trainer = pl.Trainer(max_epochs=6, enable_model_summary=False, num_sanity_val_steps=0, **quiet)
    trainer.fit(Empty(), batches)
    return statistics.median(epochs[1:]) / members


def epoch_seconds(folder: Path) -> tuple[float, float, float]:
    """(median, min, max) seconds between consecutive epochs' val/acc points, over the sweep's runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("lightsweep")
    gaps = []
    for run in client.search_runs([experiment.experiment_id], "tags.mlflow.parentRunId LIKE '%'", max_results=1000):
        times = sorted(m.timestamp for m in client.get_metric_history(run.info.run_id, "val/acc"))
        gaps += [(b - a) / 1000 for a, b in zip(times, times[1:])]
    if not gaps:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(gaps), min(gaps), max(gaps)


def group_members(args, optimizers: list[str] | None = None):
    """The benchmarked sweep's members, built as the vectorized launcher builds them (each job's config
    composed from conf/, its module, callbacks and optimizer), in a group's order (by seed)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    import lightsweep.resolvers  # noqa: F401  (conf/ uses them)
    from lightsweep.vectorized.group import prepare

    members = []
    for seed in args.seeds.split(","):
        for name in optimizers or args.optimizers.split(","):
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                overrides = [f"model={args.model}", f"optimizer={name}", f"seed={seed}", "logger=none"]
                overrides += [f"paths.output_dir={tempfile.mkdtemp(prefix='lightsweep-member-')}", *QUIET]
                cfg = compose("config", overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            members.append(prepare(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
    return members


def step_breakdown(args, optimizers: list[str] | None = None) -> dict[str, tuple[float, float, float]]:
    """Per member and step, on the benchmarked shapes: the batched forward+backward, and the members' own
    optimizers' steps (each member's stock optimizer over its views of the stacked weights), median [min,
    max] seconds."""
    import torch

    from lightsweep.vectorized.module import StackedClassifier

    members = group_members(args, optimizers)
    seeds = len(args.seeds.split(","))
    module = StackedClassifier(members, [i * seeds // len(members) for i in range(len(members))])
    module.bind()
    for member in members:
        member.configure()
    x = torch.randn(seeds, 128, 784)
    y = torch.randint(0, 10, (seeds, 128))
    weights = list(module.weights)

    def forward_backward():
        for w in weights:
            w.grad = None
        losses, _, _ = module.run_members(x, y, weights, shared=False)
        losses.sum().backward()

    def optimizer_steps():
        for index, member in enumerate(members):
            member.bind_grads(weights, index)
            member.optimizer.step()

    forward_backward()
    per = {"forward+backward": timed(forward_backward), "optimizer steps": timed(optimizer_steps)}
    return {k: tuple(t / len(members) for t in v) for k, v in per.items()}


def floor(args) -> float:
    """Print the matmul bound, the loss's kernels and Lightning's loop per member-epoch (median [min,
    max] of `args.repeat` measurements each) and their sum against the bound; return the median bound."""
    _, _, steps, _ = shapes(args)
    parts = {"bound": [], "kernels": [], "loop": []}
    for _ in range(args.repeat):
        parts["bound"].append(matmul_bound(args))
        parts["kernels"].append(loss_kernels(args))
        parts["loop"].append(lightning_loop(args))
    ms = {k: tuple(x * 1e3 for x in triple(v)) for k, v in parts.items()}
    bound = ms["bound"][0]
    print(f"  matmul bound per member-epoch (forward + weight-gradient matmuls, same shapes): {spread(ms['bound'])} ms")
    print(
        f"  the loss's kernels per member-epoch (log-softmax, its backward, argmax; same shapes): "
        f"{spread(ms['kernels'])} ms = {ms['kernels'][0] / bound:.2f} x the bound"
    )
    print(
        f"  Lightning's loop per member-epoch (an empty training_step, {steps} batches): {spread(ms['loop'])} ms "
        f"= {ms['loop'][0] / bound:.2f} x the bound"
    )
    sums = [(b + k + lo) / b for b, k, lo in zip(parts["bound"], parts["kernels"], parts["loop"])]
    print(f"  floor (bound + loss kernels + loop) / bound: {spread(triple(sums))}: no step can be cheaper")
    return bound / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="softmax", choices=["softmax", "mlp", "logistic"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--optimizers", default=OPTIMIZERS)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each launcher (medians are quoted)")
    parser.add_argument("--floor", action="store_true", help="only the bound and the floor (no sweeps)")
    parser.add_argument("--breakdown", action="store_true", help="only where a member's step goes (no sweeps)")
    parser.add_argument("extra", nargs="*", help="more overrides for both sweeps")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))

    members, seeds, steps, _ = shapes(args)
    if args.floor:
        print(f"{args.model}: {members} members, {steps} batches of 128 per epoch; {args.repeat} measurements each")
        floor(args)
        return
    if args.breakdown:
        parts = step_breakdown(args)
        for name, (median, low, high) in parts.items():
            print(f"  {name:18s} {median * 1e3:6.3f} ms [{low * 1e3:.3f}, {high * 1e3:.3f}] per member and step")
        share = parts["optimizer steps"][0] / sum(p[0] for p in parts.values())
        print(f"  the optimizer's share of a group step (forward+backward+optimizer): {share:.2f}")
        return
    print(
        f"{args.model}: {members} jobs ({args.optimizers} x seeds {args.seeds}), {args.epochs} epochs, full Fashion-MNIST"
    )
    runs: dict[str, list[tuple[float, float, tuple[float, float, float]]]] = {"vectorized": [], "basic": []}
    for attempt in range(args.repeat):  # the launchers alternate, so that drifting load hits both alike
        for launcher in runs:
            with tempfile.TemporaryDirectory(prefix="lightsweep-bench-") as tmp:
                wall, rss = sweep(launcher, args, Path(tmp))
                epochs = epoch_seconds(Path(tmp))
            runs[launcher].append((wall, rss, epochs))
            unit = "group" if launcher == "vectorized" else "job"
            print(
                f"  run {attempt + 1} {launcher + ':':11s} {wall:7.1f} s wall, peak RSS {rss:.2f} GB, "
                f"{spread(epochs)} s per {unit} epoch"
            )
    walls = {k: [w for w, _, _ in v] for k, v in runs.items()}
    ratios = [v / b for v, b in zip(walls["vectorized"], walls["basic"])]
    for launcher, values in walls.items():
        print(f"  {launcher} wall time, median [min, max] of {len(values)}: {spread(triple(values))} s")
    print(f"  vectorized / basic wall time: {spread(triple(ratios))} (each run's pair)")
    vec_epoch = statistics.median(e[0] for _, _, e in runs["vectorized"])
    basic_epoch = statistics.median(e[0] for _, _, e in runs["basic"])
    per_member_epoch = vec_epoch / members
    print(
        f"  per member-epoch: vectorized {per_member_epoch * 1e3:.1f} ms, basic {basic_epoch * 1e3:.1f} ms "
        f"(ratio {per_member_epoch / basic_epoch:.3f})"
    )
    bound = floor(args)
    print(f"  per member-epoch cost / matmul bound: {per_member_epoch / bound:.2f}")
    print(f"  where a member's step goes ({members} members, batch 128), median [min, max]:")
    total = per_member_epoch / steps
    parts = step_breakdown(args)
    for name, (median, low, high) in parts.items():
        print(f"    {name:26s} {median * 1e3:6.3f} ms [{low * 1e3:.3f}, {high * 1e3:.3f}]")
    rest = total - sum(p[0] for p in parts.values())
    print(
        f"    {'the rest (Lightning, data)':26s} {rest * 1e3:6.3f} ms  (of {total * 1e3:.3f} ms per step, from the sweep)"
    )
    share = parts["optimizer steps"][0] / sum(p[0] for p in parts.values())
    print(f"  the optimizer's share of a group step (forward+backward+optimizer): {share:.2f}")


if __name__ == "__main__":
    main()
