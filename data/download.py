"""Downloading standard datasets with torchvision, without leaving partial files behind."""
from __future__ import annotations

import os
import shutil
import tempfile

from utils.errors import DataError


def download_with_torchvision(name: str, root: str, final_dir: str) -> None:
    """Download torchvision dataset `name` into a temporary folder under `root`, then move the
    result into place.  Raises DataError (nothing left behind) when offline or on failure."""
    import torchvision

    parent = os.path.abspath(root)
    first_created = parent
    while not os.path.exists(os.path.dirname(first_created)):
        first_created = os.path.dirname(first_created)
    existed = os.path.isdir(parent)
    try:
        os.makedirs(parent, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=parent) as tmp:
            cls = getattr(torchvision.datasets, name)
            for train in (True, False):
                cls(root=tmp, train=train, download=True)
            produced = os.listdir(tmp)
            for entry in produced:
                src = os.path.join(tmp, entry)
                dst = os.path.join(parent, entry) if name != "MNIST" else final_dir
                if entry.endswith(".tar.gz"):
                    continue  # keep only the extracted files
                if os.path.exists(dst):
                    shutil.rmtree(dst) if os.path.isdir(dst) else os.remove(dst)
                shutil.move(src, dst)
    except Exception as exc:  # network errors come in many types
        if not existed and os.path.isdir(first_created):
            shutil.rmtree(first_created, ignore_errors=True)
        raise DataError(f"{name} files not found under {root} and the download failed "
                        f"({type(exc).__name__}: {str(exc)[:120]}); get the files while "
                        f"online, or see README 'Datasets'") from None
