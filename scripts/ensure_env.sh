#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) so that the two README commands
# work on a fresh machine.  Re-installs only when pyproject.toml or the extras changed since
# the last install.  EXTRAS (default "test") names the optional dependency groups to install,
# e.g. EXTRAS=test,ffcv (ffcv needs system packages first: see README "Datasets").
# Sourced by run.sh and test.sh; prints nothing when the environment is already current.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
stamp="$venv/.installed-from"
extras="${EXTRAS:-test}"

case "$extras" in
    *[!a-z0-9,_-]*) echo "error: EXTRAS must be a comma-separated list of names, got '$extras'" >&2
                    exit 2 ;;
esac

pick_python() {
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "error: Python >= 3.10 not found (set PYTHON=/path/to/python3)" >&2
    return 2
}

if [ ! -x "$venv/bin/python" ]; then
    py="$(pick_python)"
    echo "setting up $venv with $("$py" --version 2>&1) ..." >&2
    "$py" -m venv "$venv"
fi

want="$( (cat "$repo_root/pyproject.toml"; echo "extras=$extras") | sha256sum | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    echo "installing dependencies [$extras] into $venv (first run downloads PyTorch, a few minutes) ..." >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet "$repo_root[$extras]" >&2
    echo "$want" > "$stamp"
fi
