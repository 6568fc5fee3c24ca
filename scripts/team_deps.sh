#!/usr/bin/env bash
# System and npm packages for the team features and their tests: PostgreSQL (the tracking server's
# store), Chromium (the UI test, headless), playwright-core (tests/ui, pinned by its lockfile) and a
# one-node SLURM with accounting for the cluster-sweep tests (scripts/slurm_cluster.sh: slurm-wlm,
# munge, slurmdbd, mariadb-server).
# Idempotent: installs only what is missing. `make team-deps` runs it; so does scripts/setup.sh
# (hence `make test`) when CI=true or LIGHTSWEEP_TEAM_DEPS=1.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-liberation)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
# Debian keeps the daemons in /usr/sbin, off a non-root PATH.
has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
{ has slurmctld && has slurmd && has sbatch && has sacct; } || missing+=(slurm-wlm)
has munged || missing+=(munge)
has slurmdbd || missing+=(slurmdbd)
{ has mariadbd || has mysqld; } || missing+=(mariadb-server)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "team-deps: apt-get install ${missing[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "team-deps: missing ${missing[*]}: install them (Debian: sudo apt-get install -y ${missing[*]})" >&2
        exit 1
    fi
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 20 ] || echo "team-deps: warning: playwright-core needs Node >= 20 (found $(node --version 2>/dev/null || echo none))" >&2

# tests/ui/node_modules from package-lock.json (npm ci: exactly the locked versions).
stamp=tests/ui/node_modules/.lightsweep-lock
want=$(sha256sum tests/ui/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "team-deps: npm ci (tests/ui: playwright-core)"
    npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
fi
echo "team-deps: ready (PostgreSQL $(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1), $(chromium --version 2>/dev/null | head -1), playwright-core $(node -p 'require("./tests/ui/node_modules/playwright-core/package.json").version'), $(/usr/sbin/slurmctld -V 2>/dev/null || echo "no SLURM"))"
