#!/usr/bin/env bash
# Set up what obsflow needs on a fresh Debian machine (run as root), in .venv.
#   scripts/setup.sh demo   rsync, OpenSSH, and obsflow with its runtime dependencies
#   scripts/setup.sh test   the same, plus the test tools: dysh, aiosmtpd, selenium, chromium, rclone
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}

need=()
command -v rsync >/dev/null || need+=(rsync)
command -v ssh >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
if [ "$what" = test ]; then
    [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || need+=(chromium chromium-driver)  # browser tests
    command -v rclone >/dev/null || need+=(rclone)  # the peer in benchmarks/verify.py
fi
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
extras=""
[ "$what" = test ] && extras="[test]"
stamp=.venv/.obsflow-installed-$what
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing Python packages into .venv (log: .venv/pip-install.log)" >&2
    if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".$extras"; } \
            > .venv/pip-install.log 2>&1; then
        tail -30 .venv/pip-install.log >&2
        echo "setup: pip install failed (see .venv/pip-install.log)" >&2
        exit 1
    fi
    touch "$stamp"
fi

# Byte-compile obsflow now, as a non-editable `pip install` would: an editable install compiles
# nothing, and where PYTHONDONTWRITEBYTECODE is set (as in some images) every command would
# compile its modules again (~0.06 s of each `obsflow sync`'s start-up, measured).  Quick when
# nothing changed; a stale .pyc is never used (Python checks the source's mtime).
.venv/bin/python -m compileall -q src  # -q: prints only what failed to compile
