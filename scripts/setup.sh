#!/usr/bin/env bash
# Idempotent setup: .venv/ at the repo root with the pinned packages, lightsweep installed editable
# (with the [server] extra), Fashion-MNIST (Debian's dataset-fashion-mnist) where apt-get is
# available, and with CI=true the team features' packages (scripts/team_deps.sh).
# Re-running is cheap: packages are reinstalled only when the pins or pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.lightsweep-setup
want=$(cat requirements/constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing pinned packages (requirements/constraints.txt)"
    # A dropped package that pip would leave behind: hydra-optuna-sweeper (Optuna < 3) registers
    # hydra/sweeper=optuna too, clashing with lightsweep's own plugin (src/hydra_plugins/lightsweep_optuna).
    .venv/bin/pip uninstall --quiet --yes hydra-optuna-sweeper >/dev/null 2>&1 || true
    # Constraints pin every package exactly (`make lock` generates them; torch==2.14.1,
    # torchvision==0.29.1, ...), so pip never resolves a newer torch.
    .venv/bin/pip install --quiet --disable-pip-version-check \
        -c requirements/constraints.txt -e ".[dev,server]" 2> >(grep -v "^WARNING: Location" >&2)
    echo "$want" > "$stamp"
fi

fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$fmnist" ] && [ ! -f data/FashionMNIST/raw/train-images-idx3-ubyte ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Fashion-MNIST (apt-get install dataset-fashion-mnist)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "setup: Fashion-MNIST not installed and apt-get not usable here; copy the IDX files into" \
             "data/FashionMNIST/raw/ or run with data.download=true when online" >&2
    fi
fi
# The team features' system and npm packages (PostgreSQL, Chromium, playwright-core): CI installs
# them here, before the tests; elsewhere opt in with LIGHTSWEEP_TEAM_DEPS=1 or `make team-deps`.
if [ "${CI:-}" = true ] || [ "${LIGHTSWEEP_TEAM_DEPS:-0}" = 1 ]; then
    bash scripts/team_deps.sh
fi
echo "setup: ready (.venv/bin/python)"
