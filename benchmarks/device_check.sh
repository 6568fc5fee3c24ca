#!/usr/bin/env bash
# What only a GPU shows, on a lent GPU machine (the `device` tool), in one run that prints one table:
#   1. a single run on the GPU (trainer=gpu: bf16-mixed, data kept on the device), softmax, 20 epochs;
#   2. the 42-job experiment=optimizer_comparison (softmax and MLP, 7 optimizers, 3 seeds, 20 epochs)
#      with the vectorized launcher on the GPU;
#   3. 6 of its jobs (seed 1; softmax and MLP with sgd, adam, rmsprop: JOBS6) under the basic launcher, for
#      the ratio per job.
#
# Two steps:
#   bash benchmarks/device_check.sh --prepare    # here (with internet to PyPI): the wheels and the data
#   device run (carry .whl and .data):  bash benchmarks/device_check.sh
# The lent machine has Python 3.12, torch, Lightning 2.6.6, pandas, matplotlib, scikit-learn, but no Hydra,
# omegaconf or MLflow and no network: --prepare downloads those as cp312 wheels into .whl/ (MLflow as
# mlflow-skinny with SQLAlchemy and alembic: the sqlite store; no tracking server, no UI) and copies
# Fashion-MNIST into .data/; both are git-ignored here (.git/info/exclude) and travel with `carry`.
# Left out there: the MLflow server and UI, the browser, SLURM, DDP over several GPUs, the report's
# browser view; the runs land in a sqlite store in /tmp on that machine and are summarised here.
# Set DEVICE_CHECK_CPU=1 to rehearse the whole script on a CPU machine (trainer=cpu, 2 epochs).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
    hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0 hydra-submitit-launcher==1.2.0 submitit==1.5.4
    mlflow-skinny==3.17.2 mlflow-tracing==3.17.2 sqlalchemy==2.1.9 greenlet alembic==1.20.1 mako==1.4.3
    databricks-sdk==0.156.0 google-auth==2.62.2 pyasn1==0.6.5 pyasn1_modules==0.4.2 cryptography==50.0.2
    cffi==2.1.1 pycparser==3.12 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 annotated-doc==0.0.7
    gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2
    opentelemetry-semantic-conventions==0.66b2 opentelemetry-proto==1.45.2 sqlparse==0.6.1 cachetools==7.3.2
    python-dotenv==1.2.4 pydantic==2.14.3 pydantic_core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
    importlib_metadata==9.1.0 optuna==5.1.0 colorlog==6.12.0
)
EPOCHS=20
JOBS6=("model=softmax,mlp" "optimizer=sgd,adam,rmsprop" "seed=1")

if [ "${1:-}" = "--prepare" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl .data/fashion-mnist
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_34_x86_64 -d .whl "${WHEELS[@]}"
    # antlr4's runtime (omegaconf's parser) is published as a source archive only: a pure-Python wheel of it.
    python3 -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3
    cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
    du -sh .whl .data
    echo "prepared: carry .whl and .data (the working tree and both must stay under 64 MiB)"
    exit 0
fi

out=${OUT:-/tmp/device-check}
mkdir -p "$out"
work=$(mktemp -d /tmp/lightsweep-device-XXXX)
if [ "${DEVICE_CHECK_CPU:-0}" = 1 ]; then
    trainer=cpu EPOCHS=2 PY=${PY:-.venv/bin/python}
    data="/usr/share/datasets/fashion-mnist"
else
    trainer=gpu PY=python3
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src
    data="$PWD/.data/fashion-mnist"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
fi
export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db" PYTHONUNBUFFERED=1
common=("trainer=$trainer" "trainer.max_epochs=$EPOCHS" "data.local_copies=[$data]" "paths.log_dir=$work/outputs"
        "trainer.enable_progress_bar=false" "callbacks.progress_bar=null" "callbacks.model_summary=null")

timed() {  # name, then the command: its wall seconds into $out/<name>.s, its output into $out/<name>.log
    local name=$1 started
    shift
    started=$(date +%s%N)
    if ! "$@" > "$out/$name.log" 2>&1; then
        echo "$name failed: see $out/$name.log"; tail -20 "$out/$name.log"; exit 1
    fi
    echo "$(( ($(date +%s%N) - started) / 1000000 ))e-3" > "$out/$name.s"
    echo "$name: $(cat "$out/$name.s") s"
}

timed single "$PY" train.py model=softmax "${common[@]}" experiment_name=device_single
timed vectorized "$PY" train.py -m experiment=optimizer_comparison "${common[@]}"
timed basic "$PY" train.py -m hydra/launcher=basic "${JOBS6[@]}" "${common[@]}" experiment_name=device_basic

"$PY" - "$out" "$work/mlflow.db" <<'PY'
import statistics, sys
from pathlib import Path

from mlflow.tracking import MlflowClient

out, db = Path(sys.argv[1]), sys.argv[2]
client = MlflowClient(f"sqlite:///{db}")
seconds = {name: float((out / f"{name}.s").read_text()) for name in ("single", "vectorized", "basic")}


def children(experiment: str):
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def epoch_s(runs) -> float:
    gaps = []
    for run in runs:
        times = sorted(m.timestamp for m in client.get_metric_history(run.info.run_id, "val/acc"))
        gaps += [(b - a) / 1000 for a, b in zip(times, times[1:])]
    return statistics.median(gaps) if gaps else float("nan")


single = [r for r in client.search_runs([client.get_experiment_by_name("device_single").experiment_id])]
vectorized, basic = children("optimizer_comparison"), children("device_basic")
statuses = {r.info.status for r in vectorized + basic + single}
acc = {r.info.run_name: r.data.metrics.get("test/acc", float("nan")) for r in vectorized}
per_job = {"vectorized": seconds["vectorized"] / max(len(vectorized), 1), "basic": seconds["basic"] / max(len(basic), 1)}
gpu = (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else "CPU rehearsal"
rows = [
    ("device", gpu),
    ("single run, softmax, wall s", f"{seconds['single']:.1f} (test/acc {single[0].data.metrics.get('test/acc', float('nan')):.4f})"),
    ("single run, s per epoch", f"{epoch_s(single):.3f}"),
    (f"vectorized sweep, {len(vectorized)} jobs, wall s", f"{seconds['vectorized']:.1f}"),
    ("vectorized, s per group epoch", f"{epoch_s(vectorized):.3f}"),
    (f"basic sweep, {len(basic)} jobs, wall s", f"{seconds['basic']:.1f}"),
    ("basic, s per job epoch", f"{epoch_s(basic):.3f}"),
    ("wall s per job: vectorized / basic", f"{per_job['vectorized']:.2f} / {per_job['basic']:.2f} = {per_job['vectorized'] / per_job['basic']:.3f}"),
    ("best test/acc (vectorized)", f"{max(acc.values()):.4f} ({max(acc, key=acc.get)})"),
    ("run statuses", ", ".join(sorted(statuses))),
]
table = "\n".join(["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)])
print(table)
(out / "table.md").write_text(table + "\n")
PY
