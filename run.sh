#!/usr/bin/env bash
# Run one experiment: ./run.sh --config configs/quickstart.yml [--option value ...]
# Sets up .venv on first use (see scripts/ensure_env.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source scripts/ensure_env.sh
exec .venv/bin/python main.py "$@"
