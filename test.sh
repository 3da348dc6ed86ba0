#!/usr/bin/env bash
# Run the test suite (CPU only, no network): ./test.sh [pytest arguments ...]
# Sets up .venv on first use (see scripts/ensure_env.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source scripts/ensure_env.sh
exec .venv/bin/python -m pytest "$@"
