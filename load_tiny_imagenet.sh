#!/usr/bin/env bash
# Download TinyImageNet into DEST/tiny-imagenet-200, verify it and sort val/ into class
# folders; touches nothing outside DEST and is safe to re-run:
#     ./load_tiny_imagenet.sh DEST        (then: --data DEST --dataset TinyImageNet)
# Details and options: scripts/tiny_imagenet.py (standard-library Python, no venv needed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="python3"
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
exec "$python" "$here/scripts/tiny_imagenet.py" "$@"
