"""How much Lightning, Hydra and MLflow cost: lightsweep against a hand-written PyTorch loop, in one run.

    .venv/bin/python benchmarks/speed.py                  # everything (~10 min on 2 cores)
    .venv/bin/python benchmarks/speed.py --only epoch     # just the epoch timings
    make bench

Sections (interleaved repeats, so a busy machine slows both sides alike; medians with [min, max]):

1. epoch: steady-state seconds per epoch (epoch 1 is skipped) for softmax and mlp, batch size 128,
   Adam 1e-3, Fashion-MNIST 55k/5k, each epoch = training + validation on 5k:
   (a) plain: benchmarks/plain_train.py's loop over the same in-memory tensors (same samples, same
       order, same initial weights, same per-epoch metrics; no tracking, checkpoints, progress bar);
   (b) lightsweep: `train(cfg)` composed from conf/ with the defaults (MLflow logging to a temporary
       sqlite store, checkpoints, early-stopping checks, progress bar);
   (c) lightsweep with `logger=none`: (b)/(c) - 1 is the logging overhead.
   The final validation loss/accuracy of (a) and (b) are compared: they compute the same thing.
2. process: `python train.py model=softmax trainer.max_epochs=20` as a subprocess against
   `python benchmarks/plain_train.py --epochs 20`: whole-process wall seconds, peak RSS, and the
   seconds from launch to the first training step.
3. sweep: a 6-job softmax sweep (`-m optimizer=sgd,momentum,nesterov,adagrad,rmsprop,adam`) with
   `hydra/launcher=joblib hydra.launcher.n_jobs=2` against the sequential (basic) launcher, run both
   with 1 torch thread and with torch's default (all cores); the ratio is against the faster.

Everything MLflow writes goes to a temporary store (MLFLOW_TRACKING_URI); outputs to a temp dir.

Threads: both sides of sections 1 and 2 run with the same torch thread count, 1 by default
(`--threads 0`: torch's default, all cores). On a shared 2-core machine, 2 OpenMP threads spin-wait
for each other whenever a neighbour holds a core: a 0.15 s softmax epoch then takes 1-8 s, on
either side, and the ratios measure the neighbours. The sweep runs as users run it (joblib jobs
take cores / n_jobs threads each), and sequentially both ways. Wall-clock is the target; CPU
seconds (process time) are printed too, as they barely move with the machine's load.
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
sys.path.insert(0, str(HERE))

SWEEP_OPTIMIZERS = "sgd,momentum,nesterov,adagrad,rmsprop,adam"
TARGETS = {  # the targets (CPU, bs 128, default logging)
    "ratio softmax": 1.5,
    "ratio mlp": 1.2,
    "logging overhead": 0.05,
    "process wall ratio": 2.5,
    "first step s": 7.0,
    "peak RSS GB": 1.5,
    "sweep ratio": 0.65,
}


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(s: dict, digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}]"


# --- 1. epoch timings, in this process ----------------------------------------------------------
def lightsweep_cfg(model: str, epochs: int, tmp: Path, logger: bool):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import lightsweep.config  # noqa: F401  (resolvers used by conf/)

    out = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{model}-"))
    overrides = [
        f"model={model}",
        f"trainer.max_epochs={epochs}",
        f"paths.output_dir={out}",
        f"paths.log_dir={tmp / 'outputs'}",
        "+callbacks.bench_probe._target_=probes.BenchProbe",
    ]
    if not logger:
        overrides.append("logger=none")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_lightsweep(model: str, epochs: int, tmp: Path, logger: bool) -> tuple[dict, dict]:
    import probes
    from lightsweep.train import train

    cfg = lightsweep_cfg(model, epochs, tmp, logger)
    # The progress bar (default on) and the summary still do their work; their text goes nowhere.
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        train(cfg)
    probe = probes.PROBES.pop()
    probes.PROBES.clear()  # a probe holds its run's callbacks (Lightning lends them the module's log) and data
    return steady(probe.epoch_seconds, probe.epoch_cpu_seconds), probe.final_metrics


def run_plain(model: str, epochs: int, data) -> tuple[dict, dict]:
    import plain_train

    marks: list[tuple[float, float]] = []

    def mark(_epoch=None) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    # As in its own process: Lightning's import (earlier in this one) sets PYTORCH_NVML_BASED_CUDA_CHECK,
    # which makes Adam's every step load libnvidia-ml (lightsweep lifts it while it trains on CPU).
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


def steady(wall: list[float], cpu: list[float]) -> dict:
    """Median over the epochs after the first (which pays for warm-up: allocations, first iterations)."""
    return {"wall": statistics.median(wall[1:] or wall), "cpu": statistics.median(cpu[1:] or cpu)}


SIDES = {"plain": "plain loop (a)", "lightsweep": "lightsweep (b)", "nolog": "lightsweep, logger=none (c)"}


def epoch_section(models: list[str], repeats: int, epochs: int, tmp: Path) -> dict:
    import torch

    import plain_train

    print(f"[epoch] torch threads: {torch.get_num_threads()}; {repeats} repeats x {epochs} epochs; "
          f"steady state = median of epochs 2..{epochs}", flush=True)
    data = plain_train.load_data() if (ROOT / "data" / "FashionMNIST" / "raw").is_dir() else None
    results = {}
    for model in models:
        rows = []
        for r in range(repeats):
            if data is None:  # first use: lightsweep decompresses the local copy into data/
                run_lightsweep(model, 1, tmp, logger=False)
                data = plain_train.load_data()
            row = {}
            # Interleaved, the order reversed every other repeat (a b c, c b a, ...), so a drift in
            # the machine's speed does not favour one side.
            for side in SIDES if r % 2 == 0 else reversed(SIDES):
                if side == "plain":
                    row[side], last = run_plain(model, epochs, data)
                else:
                    row[side], last = run_lightsweep(model, epochs, tmp, logger=side == "lightsweep")
                row[f"{side}_val"] = (last.get("val/loss", float("nan")), last.get("val/acc", float("nan")))
            rows.append(row)
            print(f"[epoch] {model} repeat {r + 1}: " + "  ".join(
                f"{side} {row[side]['wall']:.3f}s (cpu {row[side]['cpu']:.3f}s)" for side in SIDES)
                + f"  ratio b/a {row['lightsweep']['wall'] / row['plain']['wall']:.2f}"
                + f"  final val/loss a {row['plain_val'][0]:.6f} b {row['lightsweep_val'][0]:.6f}", flush=True)
        out = {}
        for clock in ("wall", "cpu"):
            out[clock] = {side: stats([row[side][clock] for row in rows]) for side in SIDES}
            out[clock]["ratio"] = stats([row["lightsweep"][clock] / row["plain"][clock] for row in rows])
            out[clock]["overhead"] = stats([row["lightsweep"][clock] / row["nolog"][clock] - 1 for row in rows])
        out["max_abs_val_loss_diff"] = max(abs(row["plain_val"][0] - row[s + "_val"][0]) for row in rows for s in ("lightsweep", "nolog"))
        out["max_abs_val_acc_diff"] = max(abs(row["plain_val"][1] - row[s + "_val"][1]) for row in rows for s in ("lightsweep", "nolog"))
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


def timed_process(cmd: list[str], env: dict, log: Path) -> dict:
    """Wall and CPU seconds, peak RSS, and the wall and CPU seconds from launch to the first step."""
    first = log.with_suffix(".first")
    first.unlink(missing_ok=True)
    env = {**env, "BENCH_FIRST_STEP_FILE": str(first)}
    peak = 0
    with open(log, "w") as fh:
        start_wall, start = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
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
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_gb": peak / 1e9,
            "first_step": first_wall - start_wall, "first_step_cpu": first_cpu}


def bench_env(tmp: Path) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'store' / 'mlflow.db'}"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(HERE), env.get("PYTHONPATH", "")] if p)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def process_section(repeats: int, epochs: int, tmp: Path, threads: int | None) -> dict:
    env = bench_env(tmp)
    lightsweep_cmd = [sys.executable, "train.py", "model=softmax", f"trainer.max_epochs={epochs}",
                      f"paths.log_dir={tmp / 'outputs'}", "+callbacks.bench_probe._target_=probes.BenchProbe"]
    plain_cmd = [sys.executable, str(HERE / "plain_train.py"), "--model", "softmax", "--epochs", str(epochs)]
    if threads:
        lightsweep_cmd.append(f"threads={threads}")
        plain_cmd += ["--threads", str(threads)]
    print(f"[process] {' '.join(lightsweep_cmd[1:4])} {' '.join(lightsweep_cmd[6:])}  vs  "
          f"{' '.join(plain_cmd[1:])}; {repeats} repeats", flush=True)
    runs = {"plain": [], "lightsweep": []}
    for r in range(repeats):
        for side, cmd in (("plain", plain_cmd), ("lightsweep", lightsweep_cmd)):
            runs[side].append(timed_process(cmd, env, tmp / f"process-{side}-{r}.log"))
        p, l = runs["plain"][-1], runs["lightsweep"][-1]
        print(f"[process] repeat {r + 1}: wall plain {p['wall']:.1f}s lightsweep {l['wall']:.1f}s "
              f"(x{l['wall'] / p['wall']:.2f}; cpu {p['cpu']:.1f}s vs {l['cpu']:.1f}s); first step plain "
              f"{p['first_step']:.1f}s lightsweep {l['first_step']:.1f}s (cpu {l['first_step_cpu']:.1f}s); "
              f"peak RSS plain {p['rss_gb']:.2f} GB lightsweep {l['rss_gb']:.2f} GB", flush=True)
    keys = ("wall", "cpu", "rss_gb", "first_step", "first_step_cpu")
    out = {side: {k: stats([run[k] for run in rs]) for k in keys} for side, rs in runs.items()}
    out["wall_ratio"] = stats([l["wall"] / p["wall"] for p, l in zip(runs["plain"], runs["lightsweep"])])
    out["epochs"] = epochs
    out["cpu_ratio"] = stats([l["cpu"] / p["cpu"] for p, l in zip(runs["plain"], runs["lightsweep"])])
    return out


# --- 3. parallel sweep --------------------------------------------------------------------------
SWEEP_SIDES = {  # name: extra overrides
    "sequential 1 thread": ["threads=1"],
    "sequential all cores": [],  # torch's default threads: what `python train.py -m ...` does
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],  # each job: cores / n_jobs threads
}


def sweep_section(repeats: int, epochs: int, tmp: Path) -> dict:
    """The joblib sweep against the faster of two sequential sweeps (1 thread, all cores), per repeat:
    which one wins depends on the machine's load, and the target is against the best sequential."""
    env = bench_env(tmp)
    base = [sys.executable, "train.py", "-m", "model=softmax", f"optimizer={SWEEP_OPTIMIZERS}",
            f"trainer.max_epochs={epochs}", f"paths.log_dir={tmp / 'outputs'}"]
    print(f"[sweep] 6 softmax jobs x {epochs} epochs: {', '.join(SWEEP_SIDES)}; {repeats} repeats", flush=True)
    runs = {side: [] for side in SWEEP_SIDES}
    for r in range(repeats):
        order = list(SWEEP_SIDES) if r % 2 == 0 else list(reversed(SWEEP_SIDES))
        for side in order:
            name = f"sweep-{side.replace(' ', '-')}-{r}"
            cmd = [*base, *SWEEP_SIDES[side], f"hydra.sweep.dir={tmp / name}"]
            runs[side].append(timed_process(cmd, env, tmp / f"{name}.log")["wall"])
        best = min(runs["sequential 1 thread"][-1], runs["sequential all cores"][-1])
        print(f"[sweep] repeat {r + 1}: " + ", ".join(f"{side} {runs[side][-1]:.1f}s" for side in SWEEP_SIDES)
              + f" (joblib / best sequential x{runs['joblib'][-1] / best:.2f})", flush=True)
    out = {side: stats(v) for side, v in runs.items()}
    best = [min(a, b) for a, b in zip(runs["sequential 1 thread"], runs["sequential all cores"])]
    out["best sequential"] = stats(best)
    out["ratio"] = stats([j / s for s, j in zip(best, runs["joblib"])])
    out["epochs"] = epochs
    return out


# --- report -------------------------------------------------------------------------------------
def pct(s: dict) -> str:
    return f"{s['median']:+.1%} [{s['min']:+.1%}, {s['max']:+.1%}]"


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def report(results: dict) -> None:
    load = ", ".join(f"{k} {a:.1f}->{b:.1f}" for k, (a, b) in results.get("load", {}).items())
    lines = ["", "== lightsweep speed benchmark: median [min, max] ==",
             f"torch threads: {results['threads']}; {os.cpu_count()} cores; load average (1 min) per section: {load}"]
    if "epoch" in results:
        for clock, title in (("wall", "wall-clock"), ("cpu", "CPU (process time)")):
            lines.append(f"epoch seconds, steady state, {title}:")
            lines.append(f"  {'model':<8} {'plain (a)':<22} {'lightsweep (b)':<22} {'logger=none (c)':<22} "
                         f"{'ratio b/a':<19} logging b/c-1")
            for model, r in results["epoch"].items():
                c = r[clock]
                lines.append(f"  {model:<8} {fmt(c['plain']):<22} {fmt(c['lightsweep']):<22} {fmt(c['nolog']):<22} "
                             f"{fmt(c['ratio'], 2):<19} {pct(c['overhead'])}")
        lines.append("  same computation: max |final val/loss (a) - (b or c)| = "
                     + ", ".join(f"{m} {r['max_abs_val_loss_diff']:.1e}" for m, r in results["epoch"].items())
                     + "; val/acc: "
                     + ", ".join(f"{m} {r['max_abs_val_acc_diff']:.4f}" for m, r in results["epoch"].items()))
    if "process" in results:
        r = results["process"]
        lines.append(f"whole process, softmax {r['epochs']} epochs:")
        lines.append(f"  {'':<28} {'plain script':<22} {'python train.py':<22} ratio")
        lines.append(f"  {'wall seconds':<28} {fmt(r['plain']['wall'], 1):<22} {fmt(r['lightsweep']['wall'], 1):<22} {fmt(r['wall_ratio'], 2)}")
        lines.append(f"  {'CPU seconds':<28} {fmt(r['plain']['cpu'], 1):<22} {fmt(r['lightsweep']['cpu'], 1):<22} {fmt(r['cpu_ratio'], 2)}")
        lines.append(f"  {'launch to first step, s':<28} {fmt(r['plain']['first_step'], 2):<22} {fmt(r['lightsweep']['first_step'], 2)}")
        lines.append(f"  {'  (CPU seconds by then)':<28} {fmt(r['plain']['first_step_cpu'], 2):<22} {fmt(r['lightsweep']['first_step_cpu'], 2)}")
        lines.append(f"  {'peak RSS, GB':<28} {fmt(r['plain']['rss_gb'], 2):<22} {fmt(r['lightsweep']['rss_gb'], 2)}")
    if "sweep" in results:
        r = results["sweep"]
        lines.append(f"sweep, 6 softmax jobs x {r['epochs']} epochs, wall seconds:")
        for side in (*SWEEP_SIDES, "best sequential"):
            lines.append(f"  {side:<28} {fmt(r[side], 1)}")
        lines.append(f"  {'joblib / best sequential':<28} {fmt(r['ratio'], 2)}")
    lines.append("targets:")
    checks = []
    if "epoch" in results:
        for model in results["epoch"]:
            key = f"ratio {model}"
            if key in TARGETS:
                checks.append((f"epoch ratio b/a {model} <= {TARGETS[key]}", results["epoch"][model]["wall"]["ratio"]["median"], TARGETS[key]))
        worst = max(r["wall"]["overhead"]["median"] for r in results["epoch"].values())
        checks.append((f"logging overhead <= {TARGETS['logging overhead']:.0%}", worst, TARGETS["logging overhead"]))
    if "process" in results:
        r = results["process"]
        checks.append((f"process wall ratio <= {TARGETS['process wall ratio']}", r["wall_ratio"]["median"], TARGETS["process wall ratio"]))
        checks.append((f"launch to first step <= {TARGETS['first step s']} s", r["lightsweep"]["first_step"]["median"], TARGETS["first step s"]))
        checks.append((f"peak RSS <= {TARGETS['peak RSS GB']} GB", r["lightsweep"]["rss_gb"]["median"], TARGETS["peak RSS GB"]))
    if "sweep" in results:
        checks.append((f"sweep joblib/sequential <= {TARGETS['sweep ratio']}", results["sweep"]["ratio"]["median"], TARGETS["sweep ratio"]))
    for name, value, target in checks:
        lines.append(f"  {name:<38} {value:8.3f}  {verdict(value, target)}")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="epoch,process,sweep", help="comma-separated sections to run")
    parser.add_argument("--models", default="softmax,mlp")
    parser.add_argument("--repeats", type=int, default=7, help="repeats of the epoch section")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per timed run (the first is skipped)")
    parser.add_argument("--process-repeats", type=int, default=3)
    parser.add_argument("--process-epochs", type=int, default=20)
    parser.add_argument("--sweep-repeats", type=int, default=2)
    parser.add_argument("--sweep-epochs", type=int, default=20, help="epochs per sweep job (20: the default run)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on both sides of the epoch and process sections; 0: torch's "
                             "default (all cores). Default 1: see the module docstring")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    sections = set(args.only.split(","))

    results = {"threads": args.threads or "torch default"}
    with tempfile.TemporaryDirectory(prefix="lightsweep-bench-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'store' / 'mlflow.db'}"
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        results["load"] = {}
        for section, run in (
            ("epoch", lambda: epoch_section(args.models.split(","), args.repeats, args.epochs, tmp)),
            ("process", lambda: process_section(args.process_repeats, args.process_epochs, tmp, args.threads)),
            ("sweep", lambda: sweep_section(args.sweep_repeats, args.sweep_epochs, tmp)),
        ):
            if section in sections:
                before = os.getloadavg()[0]
                results[section] = run()
                results["load"][section] = (before, os.getloadavg()[0])
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
