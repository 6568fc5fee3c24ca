"""Cluster sweeps on a real SLURM: scripts/slurm_cluster.sh starts a one-node cluster with accounting
(munged, MariaDB, slurmdbd, slurmctld, slurmd, all on loopback); sweeps with
hydra/launcher=slurm and slurm_vectorized run on it end to end, through lightsweep's launchers
(src/hydra_plugins/lightsweep_submitit): a vectorized group as one task, a time limit and a
preemption that requeue a task which continues its runs, submitting without waiting then
collecting; the script stops everything and leaves nothing behind.

Slow tier. The SLURM packages come from scripts/team_deps.sh (CI installs them); where they are
missing, or not running as root, the tests skip with the reason (and fail under CI=true). The cluster
is private to this module: its own state folder, ports and cluster name, so it runs beside a
`make slurm` cluster. Timings land in test-artifacts/slurm_timings.json.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import PYTHON, QUIET, ROOT, cli_env, run_sweep, sweep_runs
from pytorch_lightning import Callback
from team_helpers import ARTIFACTS, IN_CI, SERVER_SCRIPT, free_port, pid_alive, postgres_installed, require

from lightsweep.callbacks import EpochHistory

pytestmark = pytest.mark.slow

CLUSTER_SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
DAEMONS = ("munged", "mariadb", "slurmdbd", "slurmctld", "slurmd")
BINARIES = (
    "munged",
    "mungekey",
    "mariadbd",
    "mariadb-install-db",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sbatch",
    "sacct",
    "sacctmgr",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)
PACKAGES = "make team-deps, or apt-get install -y slurm-wlm munge slurmdbd mariadb-server"
# One CPU per job (this node has 2), little memory, a few batches: seconds per job once it runs.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=5",
]
TINY = [
    "model=softmax",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
]
TIMINGS: dict[str, float] = {}


class Misbehave(Callback):
    """A job that goes wrong on purpose, at its second training batch (the run exists by then).

    ok: nothing. kill: SIGKILL to itself (a hard crash: no Python exception, no result). hang: sleeps
    past its time limit (SLURM's pre-timeout signal reaches it). block: also ignores SLURM's signals
    (USR2, TERM), so SLURM kills it at the limit and only its accounting (TIMEOUT) can tell.
    """

    def __init__(self, mode: str = "ok"):
        self.mode = mode

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx != 1 or self.mode == "ok":
            return
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "block":
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _ in range(3600):  # short sleeps: a signal's Python handler runs within a second
            time.sleep(1)


class SlowEpochs(EpochHistory):
    """Makes each epoch take `seconds` longer (at its end, in short sleeps: signals are handled within
    a second). An EpochHistory, so that a vectorized group accepts it as a member's own callback (each
    member sleeps)."""

    def __init__(self, seconds: float = 1.0):
        super().__init__()
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            time.sleep(0.1)


def slurm_installed() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES)


def script(cluster, command: str, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command],
        env={**cluster.script_env, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def slurm(cluster, *args: str) -> str:
    result = subprocess.run(list(args), env=cluster.client_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (args, result.stderr)
    return result.stdout


@pytest.fixture(scope="module")
def cluster():
    require(slurm_installed(), "SLURM (slurm-wlm, munge, slurmdbd, mariadb-server)", PACKAGES)
    if os.geteuid() != 0:
        message = "the SLURM cluster's daemons run as root (slurmd starts jobs as their users)"
        pytest.fail(f"CI must run as root: {message}", pytrace=False) if IN_CI else pytest.skip(message)
    # Not under pytest's tmp dir: that one is private to root (0700) and MariaDB runs as `mysql`.
    state = Path(tempfile.mkdtemp(prefix="ls-slurm-"))
    state.chmod(0o755)
    ports = {
        "LIGHTSWEEP_SLURMCTLD_PORT": free_port(),
        "LIGHTSWEEP_SLURMD_PORT": free_port(),
        "LIGHTSWEEP_SLURMDBD_PORT": free_port(),
        "LIGHTSWEEP_SLURM_DB_PORT": free_port(),
    }
    script_env = {k: v for k, v in os.environ.items() if not k.startswith(("LIGHTSWEEP_", "SLURM_"))}
    script_env.update({k: str(v) for k, v in ports.items()})
    script_env.update({"LIGHTSWEEP_SLURM_DIR": str(state), "LIGHTSWEEP_SLURM_CLUSTER": f"lstest{secrets.token_hex(3)}"})
    conf = state / "etc" / "slurm.conf"
    client_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    client_env["SLURM_CONF"] = str(conf)
    ns = SimpleNamespace(state=state, conf=conf, ports=ports, script_env=script_env, client_env=client_env)
    start = time.monotonic()
    started = script(ns, "start")
    TIMINGS["cluster start (s)"] = round(time.monotonic() - start, 1)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        ns.start_output = started.stdout
        ns.pids = {name: int((state / "pids" / f"{name}.pid").read_text()) for name in DAEMONS}
        yield ns
    finally:
        script(ns, "stop", timeout=180)
        shutil.rmtree(state, ignore_errors=True)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "slurm_timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
        print(f"\nSLURM timings: {TIMINGS}")


def sweep_env(cluster, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A sweep's environment: the sqlite store in tmp_path, this cluster, tests/ importable by jobs."""
    path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")) if p)
    env = {k: v for k, v in cli_env(tmp_path).items() if not k.startswith("SLURM_")}
    return {**env, "SLURM_CONF": str(cluster.conf), "PYTHONPATH": path, **extra}


def sacct_states(cluster, job_ids, expect_done: bool = True, seconds: float = 60) -> dict[str, str]:
    """SLURM's accounting of the given jobs (array tasks); waits for them to leave RUNNING/COMPLETING
    (a job can write its result a moment before its processes end)."""
    deadline = time.monotonic() + seconds
    while True:
        out = slurm(cluster, "sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(sorted(set(job_ids))))
        states = dict(line.strip().split("|", 1) for line in out.splitlines() if "|" in line)
        states = {k: v.split(" ")[0] for k, v in states.items() if k in job_ids}
        busy = [s for s in states.values() if s in ("RUNNING", "COMPLETING", "PENDING")]
        if not expect_done or (len(states) == len(set(job_ids)) and not busy) or time.monotonic() > deadline:
            return states
        time.sleep(1)


def test_script_starts_a_one_node_cluster_with_accounting(cluster):
    status = script(cluster, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    for name, pid in cluster.pids.items():
        assert f"{name}: running (PID {pid})" in status.stdout
    assert f"export SLURM_CONF={cluster.conf}" in cluster.start_output

    # The node is this machine (its CPUs), idle; accounting answers.
    node = slurm(cluster, "sinfo", "-h", "-N", "-o", "%N %c %t").split()
    assert node[0] == subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    assert int(node[1]) == os.cpu_count() and node[2] == "idle", node
    slurm(cluster, "sacct", "-n", "-X")
    clusters = slurm(cluster, "sacctmgr", "-n", "-P", "list", "cluster", "format=cluster").split()
    assert cluster.script_env["LIGHTSWEEP_SLURM_CLUSTER"] in clusters

    # The database password: generated, in 0600 files only, never on a command line.
    password = (cluster.state / "etc" / "db-password").read_text().strip()
    assert len(password) >= 24
    for name in ("db-password", "slurmdbd.conf"):
        assert (cluster.state / "etc" / name).stat().st_mode & 0o777 == 0o600
    assert (cluster.state / "munge" / "munge.key").stat().st_mode & 0o777 == 0o600
    assert password not in cluster.conf.read_text()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            assert password not in proc.joinpath("cmdline").read_bytes().decode(errors="replace"), proc
        except OSError:
            continue
    # MariaDB listens on loopback only, as the mysql user.
    uid = next(
        line.split()[1]
        for line in Path(f"/proc/{cluster.pids['mariadb']}/status").read_text().splitlines()
        if line.startswith("Uid:")
    )
    assert uid != "0"

    # Idempotent: a second start finds everything running, same PIDs.
    again = script(cluster, "start")
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    assert {n: int((cluster.state / "pids" / f"{n}.pid").read_text()) for n in DAEMONS} == cluster.pids


def test_script_refuses_in_one_line_naming_the_fix(cluster, tmp_path):
    other = Path(tempfile.mkdtemp(prefix="ls-slurm-other-"))
    try:
        taken = cluster.ports["LIGHTSWEEP_SLURMCTLD_PORT"]
        result = script(
            cluster,
            "start",
            LIGHTSWEEP_SLURM_DIR=str(other),
            LIGHTSWEEP_SLURM_DB_PORT=str(free_port()),
            LIGHTSWEEP_SLURMDBD_PORT=str(free_port()),
            LIGHTSWEEP_SLURMD_PORT=str(free_port()),
            LIGHTSWEEP_SLURMCTLD_PORT=str(taken),
            timeout=60,
        )
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"slurm_cluster: error: port {taken} on 127.0.0.1 (for slurmctld) is taken: "
            "stop what uses it, or choose another with LIGHTSWEEP_SLURMCTLD_PORT"
        )
        assert not (other / "pids").exists() or not list((other / "pids").iterdir())  # nothing started
    finally:
        shutil.rmtree(other, ignore_errors=True)
    # A missing package: sbatch gone from PATH (the rest of /usr/bin kept).
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if tool.name != "sbatch":
            (fake_bin / tool.name).symlink_to(tool)
    result = script(cluster, "start", PATH=str(fake_bin), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "slurm_cluster: error: missing sbatch: run `make team-deps` (Debian: apt-get "
        "install -y slurm-wlm munge slurmdbd mariadb-server)"
    )
    # Not root: one line naming the fix (nobody cannot start slurmd).
    if shutil.which("runuser") and subprocess.run(["id", "nobody"], capture_output=True).returncode == 0:
        result = subprocess.run(
            ["runuser", "-u", "nobody", "--", "bash", str(CLUSTER_SCRIPT), "start"],
            capture_output=True,
            text=True,
            timeout=60,
            env=cluster.script_env,
        )
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "run it as root" in result.stderr


def test_sweep_lands_in_mlflow_and_its_array_tasks_complete(cluster, tmp_path):
    start = time.monotonic()
    result = run_sweep(tmp_path, *SLURM, *TINY, "optimizer=sgd,adam", env=sweep_env(cluster, tmp_path), timeout=420)
    TIMINGS["2-job sweep round trip (s)"] = round(time.monotonic() - start, 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SLURM job array" in result.stdout + result.stderr

    client, parents, children, runs = sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.launcher"] == "LightsweepSlurmLauncher"
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.run_name for c in children} == {"softmax-sgd-lr0.1-s42", "softmax-adam-lr0.001-s42"}
    for child in children:
        assert {"val/acc", "test/acc"} <= set(child.data.metrics)

    # Each child names its SLURM array task; SLURM's accounting has them COMPLETED.
    job_ids = {c.data.tags["lightsweep.slurm_job_id"] for c in children}
    assert len(job_ids) == 2 and all("_" in j for j in job_ids), job_ids
    assert sacct_states(cluster, job_ids) == dict.fromkeys(job_ids, "COMPLETED")
    sweep_dir = Path(parent.data.tags["lightsweep.sweep_dir"])
    assert (sweep_dir / "report" / "report.html").is_file()
    assert len(list((sweep_dir / ".submitit").glob("*/*_log.out"))) == 2  # submitit's logs, per task
    # The pre-timeout signal: the config's 120 s, capped at a third of the 5-minute limit.
    submission = next((sweep_dir / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --signal=USR2@100" in submission and "#SBATCH --cpus-per-task=1" in submission


def test_a_request_the_cluster_cannot_meet_fails_at_submission_in_one_line(cluster, tmp_path):
    """The config's defaults ask for 4 CPUs and 16 GB per job; this node has 2 CPUs: sbatch refuses
    (the cluster enforces its limits at submission) and the sweep says what to change."""
    result = run_sweep(
        tmp_path,
        "hydra/launcher=slurm",
        *TINY,
        "optimizer=sgd,adam",
        env=sweep_env(cluster, tmp_path),
        timeout=300,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith("error: sbatch refused the sweep's jobs (sbatch: error: Batch job submission failed")
    assert "fit hydra.launcher.* to the cluster" in errors[0] and "cpus_per_task=4" in errors[0]
    _, parents, children, _ = sweep_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FAILED" and not children
    assert not slurm(cluster, "squeue", "-h").strip()


def test_failing_jobs_end_failed_with_the_reason_and_the_sweep_finishes(cluster, tmp_path):
    """A job past its time limit (handled by the job; ignored, so SLURM kills it) and a hard crash
    (SIGKILL): each run ends FAILED with its reason, the other job runs to the end, the report is
    built, the sweep exits 1, nothing hangs and nothing stays RUNNING."""
    modes = ["block", "hang", "kill", "ok"]  # the two slow ones first: two jobs run at a time on 2 CPUs
    start = time.monotonic()
    # SLURM checks time limits every 30 s and sends the pre-timeout signal up to 30 s early: with a
    # 1 s delay it reaches the job 30-60 s in, once it trains (the default, capped at 20 s here,
    # could come 10 s in, before the run exists; then the launcher records the job's error instead).
    result = run_sweep(
        tmp_path,
        *SLURM,
        *TINY,
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=1",
        "+callbacks.misbehave._target_=test_slurm.Misbehave",
        f"+callbacks.misbehave.mode={','.join(modes)}",
        env=sweep_env(cluster, tmp_path),
        timeout=480,
    )
    TIMINGS["time-limit and crash sweep, 4 jobs, 1-minute limit (s)"] = round(time.monotonic() - start, 1)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]

    client, parents, children, runs = sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 4, [(r.info.run_name, r.info.status) for r in runs]
    by_mode = {modes[int(c.data.tags["lightsweep.job"])]: c for c in children}
    assert set(by_mode) == set(modes)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    reason = {m: c.data.tags.get("lightsweep.failure_reason", "") for m, c in by_mode.items()}
    status = {m: c.info.status for m, c in by_mode.items()}
    assert status == {"ok": "FINISHED", "kill": "FAILED", "hang": "FAILED", "block": "FAILED"}, reason

    assert "test/acc" in by_mode["ok"].data.metrics  # the job beside the failures ran to its end
    # The job that could act stopped itself at SLURM's pre-timeout signal and said why.
    assert reason["hang"].startswith("TimeLimitReached: SLURM's time limit of 1 min is near (it sent SIGUSR2)"), reason
    assert by_mode["hang"].data.params["callbacks.misbehave.mode"] == "hang"
    assert "raise hydra.launcher.timeout_min" in reason["hang"]
    # Those that could not: the reason comes from SLURM's accounting.
    assert "ended FAILED without a result: it was killed by SIGKILL" in reason["kill"], reason
    assert "ended TIMEOUT without a result: it ran past its time limit" in reason["block"], reason
    assert "raise hydra.launcher.timeout_min (now 1)" in reason["block"]
    assert by_mode["kill"].data.tags["lightsweep.slurm_state"] == "FAILED"
    job_ids = {m: c.data.tags["lightsweep.slurm_job_id"] for m, c in by_mode.items()}
    states = sacct_states(cluster, set(job_ids.values()))
    assert states[job_ids["kill"]] == "FAILED" and states[job_ids["block"]] == "TIMEOUT", states
    assert states[job_ids["ok"]] == "COMPLETED", states
    for mode in ("kill", "block"):  # said on the console too, with the job's log
        assert f"failed: SLURM job {job_ids[mode]} ended" in result.stderr, result.stderr[-3000:]

    # The report was built over all four runs, and the parent says how many failed.
    parent = parents[0]
    assert parent.data.tags["lightsweep.failed_jobs"] == "3"
    report = (Path(parent.data.tags["lightsweep.sweep_dir"]) / "report" / "report.md").read_text()
    assert "4 jobs, 3 failed" in report
    # Nothing left on the cluster. A job killed at its time limit is TIMEOUT in accounting (which the
    # launcher waits for) while slurmd may still be cleaning up its processes (state CG): give it time.
    deadline = time.monotonic() + 90
    while (queue := slurm(cluster, "squeue", "-h", "-o", "%i %t").split()) and time.monotonic() < deadline:
        assert set(queue[1::2]) <= {"CG"}, queue  # only completing, never running or pending
        time.sleep(1)
    assert not queue, queue


def test_sweep_logs_to_the_team_server(cluster, tmp_path):
    """The same sweep as a team runs it: jobs log over HTTP to `mlflow server` (PostgreSQL store,
    basic auth) started by scripts/mlflow_server.sh."""
    require(postgres_installed(), "PostgreSQL", "make team-deps, or apt-get install -y postgresql")
    import requests

    state = Path(tempfile.mkdtemp(prefix="ls-slurm-server-"))
    state.chmod(0o755)
    password = secrets.token_urlsafe(18)
    port = free_port()
    server_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LIGHTSWEEP_"))},
        "LIGHTSWEEP_SERVER_DIR": str(state),
        "LIGHTSWEEP_SERVER_PORT": str(port),
        "LIGHTSWEEP_PG_PORT": str(free_port()),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
    }
    url = f"http://127.0.0.1:{port}"
    try:
        started = subprocess.run(
            ["bash", str(SERVER_SCRIPT), "start"], env=server_env, capture_output=True, text=True, timeout=300
        )
        assert started.returncode == 0, started.stdout + started.stderr
        env = {k: v for k, v in sweep_env(cluster, tmp_path).items() if not k.startswith("MLFLOW_")}
        env.update(
            {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
        )
        start = time.monotonic()
        result = run_sweep(
            tmp_path,
            *SLURM,
            *TINY,
            "logger=mlflow_server",
            "experiment_name=team-slurm",
            "optimizer=sgd,adam",
            env=env,
            timeout=420,
        )
        TIMINGS["2-job sweep to the team server (s)"] = round(time.monotonic() - start, 1)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

        auth = ("admin", password)
        api = f"{url}/api/2.0/mlflow"
        experiment = requests.get(
            f"{api}/experiments/get-by-name", params={"experiment_name": "team-slurm"}, auth=auth, timeout=30
        ).json()["experiment"]
        found = requests.post(
            f"{api}/runs/search", json={"experiment_ids": [experiment["experiment_id"]]}, auth=auth, timeout=30
        ).json()["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in found]
        parents = [r for r, t in zip(found, tags) if t.get("lightsweep.role") == "sweep"]
        children = [(r, t) for r, t in zip(found, tags) if "mlflow.parentRunId" in t]
        assert len(parents) == 1 and len(children) == 2
        assert parents[0]["info"]["status"] == "FINISHED"
        assert {r["info"]["status"] for r, _ in children} == {"FINISHED"}
        assert {t["mlflow.parentRunId"] for _, t in children} == {parents[0]["info"]["run_id"]}
        job_ids = {t["lightsweep.slurm_job_id"] for _, t in children}
        assert sacct_states(cluster, job_ids) == dict.fromkeys(job_ids, "COMPLETED")
        assert requests.get(f"{api}/experiments/search?max_results=1", timeout=30).status_code == 401  # auth on
    finally:
        subprocess.run(
            ["bash", str(SERVER_SCRIPT), "stop"], env=server_env, capture_output=True, text=True, timeout=120
        )
        shutil.rmtree(state, ignore_errors=True)


def test_ddp_with_slurm_starting_the_ranks(cluster, tmp_path):
    """The DDP path that works under SLURM: one task per device, strategy=ddp, SLURM starts the ranks
    (with ddp_spawn every spawned worker would read rank 0 from SLURM's environment). The launcher asks
    for trainer.num_nodes nodes and trainer.devices tasks on each: 2 ranks as 2 tasks on this node."""
    start = time.monotonic()
    result = run_sweep(
        tmp_path,
        *SLURM,
        *TINY,
        "trainer=ddp_cpu",
        "trainer.strategy=ddp",
        "seed=1",
        env=sweep_env(cluster, tmp_path),
        timeout=420,
    )
    TIMINGS["DDP job, 2 CPU ranks (s)"] = round(time.monotonic() - start, 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    client, parents, children, runs = sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 1 and len(runs) == 2  # rank 1 logs through rank 0's run
    child = children[0]
    assert child.info.status == "FINISHED" and "test/acc" in child.data.metrics
    assert child.data.params["trainer.strategy"] == "ddp" and child.data.params["trainer.devices"] == "2"
    job_id = child.data.tags["lightsweep.slurm_job_id"]
    assert sacct_states(cluster, {job_id}) == {job_id: "COMPLETED"}
    steps = slurm(cluster, "sacct", "-n", "-P", "-o", "JobID,NTasks,State", "-j", job_id).splitlines()
    assert f"{job_id}.0|2|COMPLETED" in steps, steps  # one step, two tasks: SLURM started both ranks
    logs = "".join(
        p.read_text() for p in Path(parents[0].data.tags["lightsweep.sweep_dir"]).glob(".submitit/*/*_log.*")
    )
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs
    submission = next(Path(parents[0].data.tags["lightsweep.sweep_dir"]).glob(".submitit/*/*_submission.sh"))
    script = submission.read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "#SBATCH --nodes=1" in script


# --- hydra/launcher=slurm_vectorized, requeueing, wait=false ---------------------------------------------

SLURM_VECTORIZED = ["hydra/launcher=slurm_vectorized", *SLURM[1:]]
# Four jobs that share everything but their optimizer: one vectorized group.
GROUP = [
    "model=softmax",
    "data=digits",
    "trainer.max_epochs=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=5",
    "optimizer=sgd,adam,nadam,rmsprop",
]


def children_by_name(tmp_path) -> dict:
    """{run name: (status, test/acc, SLURM job id)} of the one sweep's children in tmp_path's store."""
    _, parents, children, _ = sweep_runs(tmp_path)
    assert len(parents) == 1
    return {
        c.info.run_name: (c.info.status, c.data.metrics.get("test/acc"), c.data.tags.get("lightsweep.slurm_job_id"))
        for c in children
    }


def report_table(parent) -> list[str]:
    """The report's comparison table (its first), without the columns of seconds (they differ from sweep
    to sweep)."""
    report = (Path(parent.data.tags["lightsweep.sweep_dir"]) / "report" / "report.md").read_text()
    table = report.split("## Comparison", 1)[1].split("\n\n")[1]
    rows = [[cell.strip() for cell in line.split("|")] for line in table.splitlines() if "---" not in line]
    keep = [i for i, name in enumerate(rows[0]) if "seconds" not in name and "total s" not in name]
    return [" | ".join(row[i] for i in keep) for row in rows]


@pytest.fixture(scope="module")
def waited_group(cluster, tmp_path_factory):
    """The 4-job group sweep, launched and waited for: (tmp_path, the sweep's result)."""
    tmp_path = tmp_path_factory.mktemp("waited-group")
    start = time.monotonic()
    result = run_sweep(tmp_path, *SLURM_VECTORIZED, *GROUP, env=sweep_env(cluster, tmp_path), timeout=420)
    TIMINGS["4-job vectorized group, one task, waited for (s)"] = round(time.monotonic() - start, 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path, result


def test_a_vectorized_group_is_one_slurm_task_with_a_run_per_job(cluster, waited_group):
    tmp_path, result = waited_group
    output = result.stdout + result.stderr
    assert "4 jobs as 1 tasks (1 groups, 0 jobs alone)" in output
    assert "Group of 4 jobs (#0-3), one SLURM task: " in output and " of tensors (weights and gradients" in output
    _, parents, children, _ = sweep_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 4
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["lightsweep.vectorized"] for c in children} == {"0-3"}
    job_ids = {c.data.tags["lightsweep.slurm_job_id"] for c in children}
    assert len(job_ids) == 1, job_ids  # one SLURM task trained the four
    assert sacct_states(cluster, job_ids) == dict.fromkeys(job_ids, "COMPLETED")
    for child in children:
        assert {"val/acc", "test/acc"} <= set(child.data.metrics)
    assert (Path(parents[0].data.tags["lightsweep.sweep_dir"]) / "report" / "report.html").is_file()


def collect(tmp_path, cluster, *overrides: str, timeout: int = 420) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "pipelines/collect.py", f"paths.log_dir={tmp_path}/outputs", *overrides],
        cwd=ROOT,
        env=sweep_env(cluster, tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_submit_and_walk_away_then_collect_gives_what_a_waiting_sweep_gives(cluster, tmp_path, waited_group):
    start = time.monotonic()
    submitted = run_sweep(
        tmp_path, *SLURM_VECTORIZED, *GROUP, "hydra.launcher.wait=false", env=sweep_env(cluster, tmp_path), timeout=300
    )
    TIMINGS["wait=false: submission returns (s)"] = round(time.monotonic() - start, 1)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    _, parents, _, _ = sweep_runs(tmp_path)
    (parent,) = parents
    assert parent.info.status == "RUNNING" and parent.data.tags["lightsweep.detached"] == "true"
    assert f"python pipelines/collect.py sweep={parent.info.run_id}" in submitted.stdout
    array = parent.data.tags["lightsweep.slurm_arrays"]
    assert f"squeue -j {array}" in submitted.stdout
    assert "slurm_tasks.json" in {a.path for a in sweep_runs(tmp_path)[0].list_artifacts(parent.info.run_id)}

    start = time.monotonic()
    collected = collect(tmp_path, cluster, "sweep=latest")
    TIMINGS["wait=false: collect, waiting for the group (s)"] = round(time.monotonic() - start, 1)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert "Waiting for 1 SLURM tasks" in collected.stdout

    # The same parent, children and report as the sweep that waited.
    waited_path, _ = waited_group
    (after,) = sweep_runs(tmp_path)[1]
    (waited_parent,) = sweep_runs(waited_path)[1]
    assert after.info.run_id == parent.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags["lightsweep.failed_jobs"] == waited_parent.data.tags["lightsweep.failed_jobs"] == "0"
    assert after.data.tags["lightsweep.best_model"]  # the best child's model, logged at the sweep's end
    ours, theirs = children_by_name(tmp_path), children_by_name(waited_path)
    assert {k: v[:2] for k, v in ours.items()} == {k: v[:2] for k, v in theirs.items()}
    assert {v[2] for v in ours.values()} == {array}  # tagged with their task, as a waited sweep's are
    assert report_table(after) == report_table(waited_parent)

    again = collect(tmp_path, cluster, f"sweep={parent.info.run_id}")
    assert again.returncode == 2 and "is collected already (its parent run is FINISHED)" in again.stderr


def test_collect_records_the_tasks_that_died_without_a_word(cluster, tmp_path):
    """A sweep that did not wait, its task cancelled before it could say anything (scancel): collect
    ends its jobs' runs KILLED with SLURM's reason (creating those the task never made), builds the
    report and ends the parent, as a sweep that waits does."""
    submitted = run_sweep(
        tmp_path,
        *SLURM_VECTORIZED,
        *TINY,
        "data=digits",
        "optimizer=sgd,adam",
        "hydra.launcher.wait=false",
        env=sweep_env(cluster, tmp_path),
        timeout=300,
    )
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    (parent,) = sweep_runs(tmp_path)[1]
    array = parent.data.tags["lightsweep.slurm_arrays"]
    slurm(cluster, "scancel", array)
    start = time.monotonic()
    collected = collect(tmp_path, cluster)
    TIMINGS["wait=false: collect a cancelled task (s)"] = round(time.monotonic() - start, 1)
    # (KILLED runs are not failed ones for the sweep's status and exit code: MLflowSweepCallback.finish)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert f"job #0 failed: SLURM job {array} ended CANCELLED without a result" in collected.stderr
    _, parents, children, _ = sweep_runs(tmp_path)
    assert len(children) == 2 and {c.info.status for c in children} == {"KILLED"}
    for child in children:
        reason = child.data.tags["lightsweep.failure_reason"]
        assert f"SLURM job {array} ended CANCELLED without a result: it was cancelled (scancel)" in reason, reason
        assert child.data.tags["lightsweep.slurm_job_id"] == array
    assert parents[0].info.status != "RUNNING"
    report = (Path(parents[0].data.tags["lightsweep.sweep_dir"]) / "report" / "report.md").read_text()
    assert "2 jobs, 0 failed (0 diverged)" in report and "2 killed" in report


def epoch_end_steps(client, run, key: str = "val/acc") -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, key)]


def test_a_job_past_its_time_limit_is_requeued_and_finishes_in_one_run(cluster, tmp_path):
    """A job of 13 epochs of 10 s under a 2-minute limit: SLURM's warning signal comes before the limit,
    the task is requeued as its next epoch starts and continues its run from that epoch's checkpoint,
    once or twice, until it finishes: one FINISHED run, every epoch trained and logged once."""
    epochs = 13
    start = time.monotonic()
    result = run_sweep(
        tmp_path,
        *SLURM,
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.max_num_timeout=3",
        "model=softmax",
        "data=digits",
        f"trainer.max_epochs={epochs}",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=5",
        "callbacks.early_stopping=null",
        "+callbacks.slow._target_=test_slurm.SlowEpochs",
        "+callbacks.slow.seconds=10",
        "seed=1",
        env=sweep_env(cluster, tmp_path),
        timeout=600,
    )
    TIMINGS["time-limit requeue: 13 x 10 s epochs, 2-minute limit (s)"] = round(time.monotonic() - start, 1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client, parents, children, runs = sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 1 and len(runs) == 2  # never a second run
    (child,) = children
    assert child.info.status == "FINISHED" and "test/acc" in child.data.metrics
    requeued = int(child.data.tags["lightsweep.requeued"])
    assert requeued >= 1 and child.data.tags["lightsweep.resumed"] == str(requeued)
    # Every epoch's end once, every logged step once.
    steps = epoch_end_steps(client, child)
    assert len(steps) == epochs and len(set(steps)) == epochs, steps
    train = epoch_end_steps(client, child, "train/loss")
    assert len(train) == len(set(train)), train
    # SLURM's accounting: the task was requeued, then completed, all under one job id.
    job_id = child.data.tags["lightsweep.slurm_job_id"]
    history = slurm(cluster, "sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State,Elapsed", "-j", job_id).split()
    states = [line.split("|")[1] for line in history]
    assert states.count("REQUEUED") == requeued and states[-1] == "COMPLETED", history
    ran = sum(
        int(h) * 3600 + int(m) * 60 + int(sec) for h, m, sec in (line.split("|")[2].split(":") for line in history)
    )
    TIMINGS["time-limit requeue: the job's time on the node over its runs (s)"] = ran
    assert ran > 120  # the job was longer than its limit
    log = "".join(
        p.read_text() for p in Path(parents[0].data.tags["lightsweep.sweep_dir"]).glob(".submitit/*/*_log.out")
    )
    assert "the task is requeued as the next epoch starts" in log and "Requeued job" in log


def test_a_preempted_group_is_requeued_and_continues_its_members_runs(cluster, tmp_path):
    """SLURM's warning signal at any moment (sent by hand here, as a cluster that preempts sends it): the
    group's task is requeued at its next epoch's start, and continues every member's run from the
    group's own checkpoint."""
    epochs = 4
    process = subprocess.Popen(
        [
            PYTHON,
            "train.py",
            "-m",
            f"paths.log_dir={tmp_path}/outputs",
            *QUIET,
            *SLURM_VECTORIZED,
            "hydra.launcher.max_num_timeout=1",
            "model=softmax",
            "data=digits",
            f"trainer.max_epochs={epochs}",
            "trainer.limit_val_batches=2",
            "trainer.limit_test_batches=2",
            "trainer.log_every_n_steps=5",
            "callbacks.early_stopping=null",
            "+callbacks.slow._target_=test_slurm.SlowEpochs",
            "+callbacks.slow.seconds=1",
            "optimizer=sgd,adam",
        ],
        cwd=ROOT,
        env=sweep_env(cluster, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    start = time.monotonic()
    try:
        while not list((tmp_path / "outputs").glob("multiruns/*/group-0-1/last.ckpt")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() - start < 300, "the group wrote no checkpoint within 300 s"
            time.sleep(0.2)
        (job_id,) = slurm(cluster, "squeue", "-h", "-t", "R", "-o", "%i").split()
        slurm(cluster, "scancel", "--signal=USR2", job_id)  # to the job's steps: the task itself
        stdout, stderr = process.communicate(timeout=420)
    finally:
        if process.poll() is None:
            process.kill()
    TIMINGS["preempted group of 2, requeued (s)"] = round(time.monotonic() - start, 1)
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    client, parents, children, runs = sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["lightsweep.slurm_job_id"] for c in children} == {job_id}
    assert {c.data.tags["lightsweep.requeued"] for c in children} == {"1"}
    assert {c.data.tags["lightsweep.resumed"] for c in children} == {"1"}
    for child in children:
        steps = epoch_end_steps(client, child)
        assert len(steps) == epochs and len(set(steps)) == epochs, steps
    log = "".join(p.read_text() for p in Path(parents[0].data.tags["lightsweep.sweep_dir"]).glob(".submitit/*/*_log.*"))
    # (submitit counts a signal within 10 minutes of any limit as a time-out, as here, else as a preemption)
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    assert "vectorized group: continues from" in log
    history = slurm(cluster, "sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id).split()
    assert [line.split("|")[1] for line in history] == ["REQUEUED", "COMPLETED"], history


def test_stop_leaves_no_slurm_munge_or_database_process(cluster):
    """Last in this module: stop ends every daemon by PID and waits; nothing of the cluster is left."""
    start = time.monotonic()
    stopped = script(cluster, "stop", timeout=180)
    TIMINGS["cluster stop (s)"] = round(time.monotonic() - start, 1)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name, pid in cluster.pids.items():
        assert not pid_alive(pid), f"{name} (PID {pid}) still runs"
        assert f"stopped {name} (PID {pid})" in stopped.stdout
    state = str(cluster.state)
    for proc in Path("/proc").glob("[0-9]*"):
        if not pid_alive(int(proc.name)) or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fds = [os.readlink(fd) for fd in proc.joinpath("fd").iterdir()]
        except OSError:
            continue
        assert state not in cmdline, cmdline
        assert not [fd for fd in fds if fd.startswith(state)], (proc.name, cmdline)
    for port in cluster.ports.values():
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    status = script(cluster, "status")
    assert status.returncode == 3 and "slurmctld: not running" in status.stdout
    again = script(cluster, "stop")  # idempotent
    assert again.returncode == 0, again.stderr
