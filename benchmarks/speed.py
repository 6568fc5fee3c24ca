"""What lightsweep adds on top of Lightning, and what a run costs against a hand-written loop, in one run.

    .venv/bin/python benchmarks/speed.py                      # epoch + process + startup (~8 min on 2 cores)
    .venv/bin/python benchmarks/speed.py --before /tmp/before # also the old code, side by side
    .venv/bin/python benchmarks/speed.py --quick              # a smoke test (~2 min)
    .venv/bin/python benchmarks/speed.py --only epoch         # one section
    make bench

`--before PATH` takes another checkout of lightsweep (e.g. `git worktree add /tmp/before <commit>`),
run with this venv's python and PYTHONPATH=PATH/src, LIGHTSWEEP_ROOT=PATH; its lightsweep epoch
timing (b) and its process section are measured in the same run, interleaved with this tree's,
and printed in a "before" column.

Sections (repeats interleaved, the order reversed every other repeat (a b c, c b a, ...), so a
drift in the machine's speed hits every side alike; medians with [min, max]; the machines are
noisy, only ratios measured in one run mean anything):

1. epoch: steady-state seconds per epoch (the median of epochs 2..N; epoch 1 pays the warm-up)
   for softmax and mlp, Fashion-MNIST 55k/5k, batch size 128, Adam 1e-3, each epoch = training +
   validation on the 5k split:
   (a) plain: benchmarks/plain_train.py's loop over the same in-memory tensors (same samples, same
       order, same initial weights, same per-epoch metrics; no Lightning), for reference;
   (b) lightsweep: `train(cfg)` composed from conf/ with its defaults: MLflow logging (to a
       temporary sqlite store), checkpoints, early stopping, the progress bar a user gets (it does
       its work, its text goes to a buffer);
   (c) bare Lightning: the same LightningModule class, built from the same config (the model with
       the optimizer/scheduler partials, the same DataModule class, hence the same in-memory
       batches), fit by a bare `pl.Trainer`: no logger, `enable_checkpointing=False`, no callbacks
       but the same progress bar, the same max_epochs, accelerator, devices, precision and
       log_every_n_steps, num_sanity_val_steps=0.
   Target: b/c <= 1.15 (what lightsweep adds on top of Lightning). b/a is printed for information:
   it is mostly Lightning's own per-batch cost (hooks, closure, result collection), accepted.
   Check: (b) and (c), both seeded with `seed_everything(cfg.seed)` before building, must end with
   the same validation loss (|diff| <= 1e-6); (a)'s is printed next to them.
2. process: `python train.py model=softmax trainer.max_epochs=20` as a subprocess against
   `python benchmarks/plain_train.py --epochs 20`: whole-process wall and CPU seconds and their
   ratio (information), seconds from launch to the first training step, peak RSS of train.py
   (target <= 1.5 GB).
3. startup: a fresh process importing what a run imports (torch, Lightning, MLflow's store, pyplot,
   lightsweep), with and without the CLI's GC pause (lightsweep.startup: `gc.disable` while
   importing, then `gc.freeze`): the process-level trick is kept only while this ratio shows it pays.

Everything MLflow writes goes to a temporary store (MLFLOW_TRACKING_URI); outputs to a temp dir.

Threads: every side runs with the same torch thread count, 1 by default (`--threads 0`: torch's
default, all cores). On a shared 2-core machine, 2 OpenMP threads spin-wait for each other
whenever a neighbour holds a core: a 0.15 s softmax epoch then takes 1-8 s, on either side, and
the ratios measure the neighbours. Wall-clock is the target; CPU seconds (process time) are
printed too, as they move less with the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA_DIR = ROOT / "data"  # every tree reads the same files
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

TARGETS = {  # the targets (CPU, bs 128, lightsweep's defaults)
    "epoch b/c": 1.15,
    "peak RSS GB": 1.5,
    "val loss b-c": 1e-6,
}


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s: dict | None, digits: int = 3) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}]"


def steady(wall: list[float], cpu: list[float]) -> dict:
    """Median over the epochs after the first (which pays for warm-up: allocations, first iterations)."""
    return {"wall": statistics.median(wall[1:] or wall), "cpu": statistics.median(cpu[1:] or cpu)}


@contextlib.contextmanager
def quiet():
    """The progress bar and the summary still do their work; their text goes to a buffer."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


# --- 1. epoch timings ---------------------------------------------------------------------------
def compose(model: str, epochs: int, tmp: Path, root: Path = ROOT, probe: bool = True):
    """The config `python train.py model=<model> trainer.max_epochs=<epochs>` runs with, composed
    from `root`/conf, Hydra's runtime config set as in a run; outputs in a fresh dir under tmp."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    try:
        import lightsweep.resolvers  # noqa: F401  (conf/ uses them)
    except ImportError:  # code from before the refactor registers them in lightsweep.config
        import lightsweep.config  # noqa: F401

    out = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{model}-"))
    overrides = [
        f"model={model}",
        f"trainer.max_epochs={epochs}",
        f"paths.output_dir={out}",
        f"paths.log_dir={tmp / 'outputs'}",
        f"paths.data_dir={DATA_DIR}",
    ]
    if probe:
        overrides.append("+callbacks.bench_probe._target_=probes.BenchProbe")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _take_probe():
    import probes

    probe = probes.PROBES.pop()
    probes.PROBES.clear()  # a probe holds its trainer's callback metrics: let them go
    return probe


def run_lightsweep(model: str, epochs: int, tmp: Path, root: Path = ROOT) -> tuple[dict, dict]:
    """(b): `train(cfg)` with lightsweep's defaults; the BenchProbe callback reads the clock."""
    from lightsweep.train import train

    cfg = compose(model, epochs, tmp, root)
    with quiet():
        train(cfg)
    probe = _take_probe()
    return steady(probe.epoch_seconds, probe.epoch_cpu_seconds), probe.final_metrics


def run_bare(model: str, epochs: int, tmp: Path) -> tuple[dict, dict]:
    """(c): the same LightningModule and DataModule, built from the same config, in a bare Trainer."""
    import probes
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    cfg = compose(model, epochs, tmp, probe=False)
    # What lightsweep's build does before building (the same random state for the weights).
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, _convert_="all")
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = instantiate(cfg.model, optimizer=optimizer, scheduler=scheduler, _convert_="all")
    callbacks = [probes.BenchProbe()]
    if cfg.trainer.enable_progress_bar:  # the same bar as a user gets (its refresh rate included)
        callbacks.append(instantiate(cfg.callbacks.progress_bar))
    with quiet():  # Lightning's notes and warnings too, as in (b)
        trainer = pl.Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=callbacks,
            enable_progress_bar=cfg.trainer.enable_progress_bar,
            max_epochs=epochs,
            num_sanity_val_steps=0,
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            precision=cfg.trainer.precision,
            log_every_n_steps=cfg.trainer.log_every_n_steps,
            default_root_dir=cfg.paths.output_dir,
        )
        trainer.fit(module, datamodule=datamodule)
    probe = _take_probe()
    return steady(probe.epoch_seconds, probe.epoch_cpu_seconds), probe.final_metrics


def run_plain(model: str, epochs: int, data) -> tuple[dict, dict]:
    """(a): benchmarks/plain_train.py's loop, in this process."""
    import plain_train

    marks: list[tuple[float, float]] = []

    def mark(_epoch=None) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    # As in its own process: Lightning's import (earlier in this one) sets PYTORCH_NVML_BASED_CUDA_CHECK,
    # which makes Adam's every step load libnvidia-ml.
    saved = os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    try:
        _, history, _ = plain_train.fit(model, data, epochs, on_epoch_start=mark)
    finally:
        if saved is not None:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = saved
    mark()
    wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
    return steady(wall, cpu), history[-1]


class BeforeWorker:
    """A long-lived process running the other checkout's `train(cfg)` (side (b) only) on request:
    its imports are paid once, and it sits idle (no CPU) while this process times the other sides.
    Requests and answers are JSON lines (benchmarks/epoch_worker.py)."""

    def __init__(self, path: Path, tmp: Path, threads: int | None):
        self.log = tmp / "before-worker.log"
        env = before_env(path, tmp)
        cmd = [sys.executable, str(HERE / "epoch_worker.py")]
        if threads:
            cmd += ["--threads", str(threads)]
        self.log_fh = open(self.log, "w")
        self.proc = subprocess.Popen(
            cmd,
            cwd=path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log_fh,
            text=True,
            bufsize=1,
        )
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the --before worker ended; see {self.log}:\n{self.log.read_text()[-3000:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the --before worker failed: {answer['error']}; see {self.log}")
        return answer

    def run(self, model: str, epochs: int, tmp: Path) -> tuple[dict, dict]:
        self.proc.stdin.write(json.dumps({"model": model, "epochs": epochs, "tmp": str(tmp)}) + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        return answer["steady"], answer["final"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_fh.close()


SIDES = {
    "plain": "plain loop (a)",
    "lightsweep": "lightsweep (b)",
    "bare": "bare Trainer (c)",
    "before": "lightsweep before (b)",
}
SHORT = {"plain": "a", "lightsweep": "b", "bare": "c", "before": "before"}


def epoch_section(models: list[str], repeats: int, epochs: int, tmp: Path, worker: BeforeWorker | None) -> dict:
    import plain_train
    import torch

    sides = [s for s in SIDES if s != "before" or worker is not None]
    print(
        f"[epoch] torch threads: {torch.get_num_threads()}; {repeats} repeats x {epochs} epochs; "
        f"steady state = median of epochs 2..{epochs}; sides: {', '.join(SIDES[s] for s in sides)}",
        flush=True,
    )
    if not (DATA_DIR / "FashionMNIST" / "raw").is_dir():  # first use: lightsweep decompresses the local copy
        run_lightsweep(models[0], 1, tmp)
    data = plain_train.load_data()
    results = {}
    for model in models:
        rows = []
        for r in range(repeats):
            row = {}
            for side in sides if r % 2 == 0 else reversed(sides):
                if side == "plain":
                    row[side], last = run_plain(model, epochs, data)
                elif side == "lightsweep":
                    row[side], last = run_lightsweep(model, epochs, tmp)
                elif side == "bare":
                    row[side], last = run_bare(model, epochs, tmp)
                else:
                    row[side], last = worker.run(model, epochs, tmp)
                row[f"{side}_val"] = (last.get("val/loss", float("nan")), last.get("val/acc", float("nan")))
            rows.append(row)
            line = "  ".join(f"{SHORT[side]} {row[side]['wall']:.3f}s (cpu {row[side]['cpu']:.3f})" for side in sides)
            print(
                f"[epoch] {model} {r + 1}/{repeats}: {line}  b/c {row['lightsweep']['wall'] / row['bare']['wall']:.3f}"
                f"  b/a {row['lightsweep']['wall'] / row['plain']['wall']:.2f}"
                + "  final val/loss "
                + " ".join(f"{SHORT[s]} {row[s + '_val'][0]:.7f}" for s in sides),
                flush=True,
            )
        out = {"n_epochs": epochs}
        for clock in ("wall", "cpu"):
            c = out[clock] = {side: stats([row[side][clock] for row in rows]) for side in sides}
            c["b/c"] = stats([row["lightsweep"][clock] / row["bare"][clock] for row in rows])
            c["b/a"] = stats([row["lightsweep"][clock] / row["plain"][clock] for row in rows])
            c["c/a"] = stats([row["bare"][clock] / row["plain"][clock] for row in rows])
            if worker is not None:
                c["before/a"] = stats([row["before"][clock] / row["plain"][clock] for row in rows])
                c["b/before"] = stats([row["lightsweep"][clock] / row["before"][clock] for row in rows])
        out["val_loss_b_c"] = max(abs(row["lightsweep_val"][0] - row["bare_val"][0]) for row in rows)
        out["val_loss_a_b"] = max(abs(row["lightsweep_val"][0] - row["plain_val"][0]) for row in rows)
        out["val_acc_a_b"] = max(abs(row["lightsweep_val"][1] - row["plain_val"][1]) for row in rows)
        if worker is not None:
            out["val_loss_before_b"] = max(abs(row["lightsweep_val"][0] - row["before_val"][0]) for row in rows)
        results[model] = out
    return results


# --- 2. whole process ---------------------------------------------------------------------------
def _peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set size so far (VmHWM, reset by exec, unlike ru_maxrss, which a
    child inherits from the process that forked it)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def timed_process(cmd: list[str], env: dict, log: Path, cwd: Path = ROOT) -> dict:
    """Wall and CPU seconds, peak RSS, and the wall and CPU seconds from launch to the first step."""
    first = log.with_suffix(".first")
    first.unlink(missing_ok=True)
    env = {**env, "BENCH_FIRST_STEP_FILE": str(first)}
    peak = 0
    with open(log, "w") as fh:
        start_wall, start = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        while True:  # poll the high-water mark until the process ends (it is gone once reaped)
            peak = max(peak, _peak_rss_bytes(proc.pid) or 0)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    first_wall, first_cpu = (float(v) for v in first.read_text().split()) if first.exists() else (float("nan"),) * 2
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_gb": peak / 1e9,
        "first_step": first_wall - start_wall,
        "first_step_cpu": first_cpu,
    }


def bench_env(tmp: Path, store: str = "store") -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / store / 'mlflow.db'}"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(HERE), env.get("PYTHONPATH", "")] if p)
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("LIGHTSWEEP_ROOT", None)
    return env


def before_env(path: Path, tmp: Path) -> dict:
    """The other checkout's code and conf/ (its own MLflow store); this tree's probes."""
    env = bench_env(tmp, "store-before")
    env["PYTHONPATH"] = os.pathsep.join([str(path / "src"), str(HERE)])
    env["LIGHTSWEEP_ROOT"] = str(path)
    return env


def process_section(repeats: int, epochs: int, tmp: Path, threads: int | None, before: Path | None) -> dict:
    common = [
        f"trainer.max_epochs={epochs}",
        f"paths.log_dir={tmp / 'outputs'}",
        f"paths.data_dir={DATA_DIR}",
        "+callbacks.bench_probe._target_=probes.BenchProbe",
    ]
    lightsweep_cmd = [sys.executable, "train.py", "model=softmax", *common]
    plain_cmd = [sys.executable, str(HERE / "plain_train.py"), "--model", "softmax", "--epochs", str(epochs)]
    if threads:
        lightsweep_cmd.append(f"threads={threads}")
        plain_cmd += ["--threads", str(threads)]
    sides = {"plain": (plain_cmd, bench_env(tmp), ROOT), "lightsweep": (lightsweep_cmd, bench_env(tmp), ROOT)}
    if before is not None:
        sides["before"] = (lightsweep_cmd, before_env(before, tmp), before)
    print(
        f"[process] python train.py model=softmax trainer.max_epochs={epochs} (+ paths, a timing probe"
        f"{', threads=%d' % threads if threads else ''})  vs  plain_train.py --epochs {epochs}; "
        f"{repeats} repeats; sides: {', '.join(sides)}",
        flush=True,
    )
    runs = {side: [] for side in sides}
    for r in range(repeats):
        for side in sides if r % 2 == 0 else reversed(sides):
            cmd, env, cwd = sides[side]
            runs[side].append(timed_process(cmd, env, tmp / f"process-{side}-{r}.log", cwd))
        print(
            f"[process] {r + 1}/{repeats}: "
            + "; ".join(
                f"{side} wall {run[-1]['wall']:.1f}s cpu {run[-1]['cpu']:.1f}s first step {run[-1]['first_step']:.1f}s "
                f"RSS {run[-1]['rss_gb']:.2f} GB"
                for side, run in runs.items()
            )
            + f"; wall ratio {runs['lightsweep'][-1]['wall'] / runs['plain'][-1]['wall']:.2f}",
            flush=True,
        )
    keys = ("wall", "cpu", "rss_gb", "first_step", "first_step_cpu")
    out = {side: {k: stats([run[k] for run in rs]) for k in keys} for side, rs in runs.items()}
    for side in runs:
        if side != "plain":
            for clock in ("wall", "cpu"):
                out[side][f"{clock}_ratio"] = stats([s[clock] / p[clock] for p, s in zip(runs["plain"], runs[side])])
    out["epochs"] = epochs
    return out


# --- report -------------------------------------------------------------------------------------
# --- 3. start-up: the CLI's GC pause (lightsweep.startup) -----------------------------------------
IMPORTS = (
    "import lightsweep.cli, pytorch_lightning, mlflow.tracking, mlflow.store.tracking.sqlalchemy_store, "
    "lightsweep.build, lightsweep.callbacks; from lightsweep.plots import pyplot; pyplot()"
)


def startup_section(repeats: int) -> dict:
    """Seconds to import what a run imports, in a fresh process, with and without `pause_gc()` (ABBA)."""
    code = {"paused": f"from lightsweep.startup import pause_gc; pause_gc(); {IMPORTS}", "collecting": IMPORTS}
    times: dict[str, list[float]] = {"paused": [], "collecting": []}
    for i in range(repeats):
        for side in ("paused", "collecting") if i % 2 == 0 else ("collecting", "paused"):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code[side]], cwd=ROOT, check=True, capture_output=True)
            times[side].append(time.perf_counter() - start)
    ratios = [p / c for p, c in zip(times["paused"], times["collecting"])]
    return {side: stats(values) for side, values in times.items()} | {"ratio": stats(ratios)}


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def report(results: dict) -> None:
    load = ", ".join(f"{k} {a:.1f}->{b:.1f}" for k, (a, b) in results.get("load", {}).items())
    lines = [
        "",
        "== lightsweep speed benchmark: median [min, max] ==",
        f"torch threads: {results['threads']}; {os.cpu_count()} cores; load average (1 min) per section: {load}",
    ]
    if results.get("before"):
        lines.append(f"before: {results['before']}")
    w = 22
    if "epoch" in results:
        before = any("before" in r["wall"] for r in results["epoch"].values())
        n = next(iter(results["epoch"].values()))["n_epochs"]
        for clock, title in (("wall", "wall-clock"), ("cpu", "CPU (process time)")):
            lines.append(f"epoch seconds, steady state (epochs 2..{n}), {title}:")
            head = f"  {'model':<8} {'plain (a)':<{w}} {'lightsweep (b)':<{w}} {'bare Trainer (c)':<{w}}"
            if before:
                head += f" {'before (b)':<{w}}"
            lines.append(head + f" {'b/c (target)':<{w}} b/a")
            for model, r in results["epoch"].items():
                c = r[clock]
                line = f"  {model:<8} {fmt(c['plain']):<{w}} {fmt(c['lightsweep']):<{w}} {fmt(c['bare']):<{w}}"
                if before:
                    line += f" {fmt(c['before']):<{w}}"
                lines.append(line + f" {fmt(c['b/c']):<{w}} {fmt(c['b/a'], 2)}")
            if before:
                lines.append(
                    "  before vs after: "
                    + "; ".join(
                        f"{m} after/before {fmt(r[clock]['b/before'], 2)}, before/a {fmt(r[clock]['before/a'], 2)}"
                        for m, r in results["epoch"].items()
                    )
                )
        lines.append(
            "  same computation, max |final val/loss| difference: "
            + "; ".join(
                f"{m}: b-c {r['val_loss_b_c']:.1e}, a-b {r['val_loss_a_b']:.1e} (val/acc {r['val_acc_a_b']:.4f})"
                + (f", before-b {r['val_loss_before_b']:.1e}" if "val_loss_before_b" in r else "")
                for m, r in results["epoch"].items()
            )
        )
    if "process" in results:
        r = results["process"]
        sides = [s for s in ("plain", "lightsweep", "before") if s in r]
        names = {"plain": "plain script", "lightsweep": "python train.py", "before": "train.py before"}
        lines.append(f"whole process, softmax {r['epochs']} epochs:")
        lines.append(f"  {'':<28} " + " ".join(f"{names[s]:<{w}}" for s in sides))
        for key, title, digits in (
            ("wall", "wall seconds", 1),
            ("wall_ratio", "  / plain script", 2),
            ("cpu", "CPU seconds", 1),
            ("cpu_ratio", "  / plain script", 2),
            ("first_step", "launch to first step, s", 2),
            ("first_step_cpu", "  (CPU seconds by then)", 2),
            ("rss_gb", "peak RSS, GB", 2),
        ):
            lines.append(f"  {title:<28} " + " ".join(f"{fmt(r[s].get(key), digits):<{w}}" for s in sides))
    if "startup" in results:
        r = results["startup"]
        lines.append(
            f"start-up imports (fresh process), s: GC paused {fmt(r['paused'], 2)}, collecting "
            f"{fmt(r['collecting'], 2)}, ratio {fmt(r['ratio'], 2)}"
        )
    lines.append("targets (medians):")
    checks = []
    if "epoch" in results:
        for model, r in results["epoch"].items():
            checks.append(
                (f"epoch b/c {model} <= {TARGETS['epoch b/c']}", r["wall"]["b/c"]["median"], TARGETS["epoch b/c"], 3)
            )
        for model, r in results["epoch"].items():
            checks.append(
                (
                    f"|val/loss b - c| {model} <= {TARGETS['val loss b-c']:.0e}",
                    r["val_loss_b_c"],
                    TARGETS["val loss b-c"],
                    "e",
                )
            )
    if "process" in results:
        checks.append(
            (
                f"peak RSS train.py <= {TARGETS['peak RSS GB']} GB",
                results["process"]["lightsweep"]["rss_gb"]["median"],
                TARGETS["peak RSS GB"],
                2,
            )
        )
    for name, value, target, digits in checks:
        shown = f"{value:.1e}" if digits == "e" else f"{value:.{digits}f}"
        lines.append(f"  {name:<38} {shown:>9}  {verdict(value, target)}")
    info = []
    if "epoch" in results:
        info += [f"epoch b/a {m} {fmt(r['wall']['b/a'], 2)}" for m, r in results["epoch"].items()]
        info += [
            f"epoch c/a (Lightning's own cost) {m} {fmt(r['wall']['c/a'], 2)}" for m, r in results["epoch"].items()
        ]
    if "process" in results:
        r = results["process"]
        info.append(
            f"process wall ratio train.py / plain ({r['epochs']} epochs) {fmt(r['lightsweep']['wall_ratio'], 2)}"
        )
        if "before" in r:
            info.append(f"process wall ratio before / plain {fmt(r['before']['wall_ratio'], 2)}")
    if info:
        lines.append("for information (no target): " + "; ".join(info))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", default="epoch,process,startup", help="comma-separated sections to run: epoch, process, startup"
    )
    parser.add_argument("--models", default="softmax,mlp")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the epoch section")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per timed run (the first is skipped)")
    parser.add_argument("--process-repeats", type=int, default=3)
    parser.add_argument("--process-epochs", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on every side; 0: torch's default (all cores). Default 1: see the module docstring",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another lightsweep checkout (e.g. a `git worktree` of the old commit): its (b) and process timings too",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 2 repeats x 3 epochs, 1 process repeat x 3 epochs (the numbers mean little)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs, args.process_repeats, args.process_epochs = 2, 3, 1, 3
    sections = set(args.only.split(","))
    if unknown := sections - {"epoch", "process", "startup"}:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    before = args.before.resolve() if args.before else None
    if before is not None and not (before / "conf" / "config.yaml").is_file():
        parser.error(f"--before {before}: no conf/config.yaml there (a lightsweep checkout?)")

    results = {"threads": args.threads or "torch default", "load": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lightsweep-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'store' / 'mlflow.db'}"
        os.environ.pop("LIGHTSWEEP_ROOT", None)
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        worker = None
        try:
            if "epoch" in sections:
                if before is not None:
                    worker = BeforeWorker(before, tmp, args.threads)
                    results["before"] = f"{before} (lightsweep from {worker.info['lightsweep']})"
                    print(f"[epoch] before: {results['before']}", flush=True)
                load = os.getloadavg()[0]
                results["epoch"] = epoch_section(args.models.split(","), args.repeats, args.epochs, tmp, worker)
                results["load"]["epoch"] = (load, os.getloadavg()[0])
        finally:
            if worker is not None:
                worker.close()
        if "process" in sections:
            if before is not None and "before" not in results:
                results["before"] = str(before)
            load = os.getloadavg()[0]
            results["process"] = process_section(args.process_repeats, args.process_epochs, tmp, args.threads, before)
            results["load"]["process"] = (load, os.getloadavg()[0])
        if "startup" in sections:
            results["startup"] = startup_section(2 if args.quick else 6)
    report(results)
    print(f"(benchmark ran {time.perf_counter() - start:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
