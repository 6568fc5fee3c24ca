"""Wall time of `experiment=optimizer_benchmark` (DeepOBS's protocol in full) with the vectorized launcher.

    python benchmarks/optimizer_benchmark.py                 # softmax: 7 x 36 tuning jobs + 7 x 10 final jobs
    python benchmarks/optimizer_benchmark.py model=mlp       # any further overrides go to train.py

Runs `train.py -m experiment=optimizer_benchmark` once, as a user would (its own store in a temporary
folder), and prints its wall time and peak RSS, the runs by status, and how the wall time splits:
training the vectorized groups (from the launcher's "vectorized group" log lines) against the rest
(composing 322 configs, opening and closing the runs, plots, checkpoints, the report).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    overrides = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="lightsweep-deepobs-") as tmp:
        folder = Path(tmp)
        uri = f"sqlite:///{folder}/mlflow.db"
        command = [
            sys.executable,
            "train.py",
            "-m",
            "experiment=optimizer_benchmark",
            f"paths.log_dir={folder}/outputs",
            *overrides,
        ]
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        stderr_bytes = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        stderr = stderr_bytes.decode(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the benchmark sweep failed:\n{stderr[-3000:]}")

        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("optimizer_benchmark")
        runs = client.search_runs([experiment.experiment_id], "tags.mlflow.parentRunId LIKE '%'", max_results=5000)
        statuses = Counter(run.info.status for run in runs)
        diverged = sum(run.data.tags.get("lightsweep.diverged") == "true" for run in runs)
    groups = [(int(n), float(s)) for n, s in re.findall(r"vectorized group \S+: (\d+) members in ([\d.]+) s", stderr)]
    fits = [float(s) for s in re.findall(r"vectorized group \S+: fit and test in ([\d.]+) s", stderr)]
    trained, grouped = sum(fits), sum(s for _, s in groups)
    print(f"experiment=optimizer_benchmark {' '.join(overrides)}")
    print(f"  wall time {wall:.1f} s ({wall / 60:.2f} min), peak RSS {usage.ru_maxrss / 1e6:.2f} GB")
    print(f"  child runs: {dict(statuses)}; diverged (FAILED, tagged lightsweep.diverged): {diverged}")
    print(f"  {len(groups)} vectorized groups, members {[n for n, _ in groups]}")
    print(
        f"  fit and test of the groups: {trained:.1f} s; their members' runs (metrics, plots, checkpoints): "
        f"{grouped - trained:.1f} s; the rest (configs, opening runs, the report): {wall - grouped:.1f} s"
    )


if __name__ == "__main__":
    main()
