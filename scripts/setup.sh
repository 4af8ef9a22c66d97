#!/usr/bin/env bash
# Set up everything obsflow needs on a fresh Debian machine (run as root):
# system tools (rsync, OpenSSH client and server) and a virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v rsync >/dev/null || need+=(rsync)
command -v ssh >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || need+=(chromium chromium-driver)  # browser test
command -v rclone >/dev/null || need+=(rclone)  # the peer in benchmarks/verify.py
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.obsflow-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing Python packages into .venv (log: .venv/pip-install.log)" >&2
    if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[test]"; } \
            > .venv/pip-install.log 2>&1; then
        tail -30 .venv/pip-install.log >&2
        echo "setup: pip install failed (see .venv/pip-install.log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
