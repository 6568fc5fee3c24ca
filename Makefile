# The two commands of the quick start: `make train` and `make test` (each sets up first).
PY := .venv/bin/python

.PHONY: setup lock lint format train test test-slow test-all bench team-deps server server-stop server-status slurm slurm-stop ui-screenshots

setup:
	@bash scripts/setup.sh

# requirements/constraints.txt, the exact pins setup installs, resolved from pyproject.toml (every
# extra) and requirements/torch.txt: run after changing a dependency, then `make setup test`. Not after
# setup (its pins may be the ones that no longer fit); uv comes pinned from the old file if it can.
lock:
	@[ -x .venv/bin/python ] || python3 -m venv .venv
	@[ -x .venv/bin/uv ] || .venv/bin/pip install --quiet -c requirements/constraints.txt uv \
		|| .venv/bin/pip install --quiet "uv>=0.9"
	.venv/bin/uv pip compile pyproject.toml --extra dev --extra server -c requirements/torch.txt \
		--python-version 3.11 --custom-compile-command "make lock" -o requirements/constraints.txt

train: setup
	$(PY) train.py model=softmax

# ruff (pyproject.toml [tool.ruff]): lint and formatting check; `make format` fixes both.
lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

# Fast tier (everything not marked slow).
# The fast tier on every core (pytest-xdist: a process per core, one torch thread each).
test: setup
	$(PY) -m pytest -n auto

# Longer end-to-end checks; exit code 5 (no test selected) is not a failure.
test-slow: setup
	$(PY) -m pytest -m slow; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-all: test test-slow

# Team server (docs/team-server.md): PostgreSQL + `mlflow server` with basic auth on 127.0.0.1.
# Needs MLFLOW_AUTH_ADMIN_PASSWORD in the environment for `make server`.
team-deps:
	@bash scripts/team_deps.sh

server: setup team-deps
	@bash scripts/mlflow_server.sh start

server-stop:
	@bash scripts/mlflow_server.sh stop

server-status:
	@bash scripts/mlflow_server.sh status

# A one-node SLURM cluster with accounting (docs/slurm.md): munged, MariaDB, slurmdbd,
# slurmctld, slurmd on this machine, as root; then `export SLURM_CONF=<printed path>`.
slurm: team-deps
	@bash scripts/slurm_cluster.sh start

slurm-stop:
	@bash scripts/slurm_cluster.sh stop

# The README's screenshots, from a real sweep on Fashion-MNIST (docs/images/).
ui-screenshots: setup team-deps
	$(PY) scripts/ui_screenshots.py

# Speed: lightsweep against a hand-written PyTorch loop, in one run (docs/speed.md).
bench: setup
	$(PY) benchmarks/speed.py $(BENCH_ARGS)
