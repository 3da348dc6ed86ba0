"""Shared fixtures: tiny datasets in the real on-disk formats, config files, main.py runners."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- dataset writers


def write_cifar10(root: Path, per_batch: int = 12, test: int = 20, seed: int = 0) -> Path:
    """cifar-10-batches-py/ with data_batch_1..5 and test_batch, pickled like the originals
    (bytes keys, uint8 data rows of 3072 values, a list of int labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test if name == "test_batch" else per_batch
        entry = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
    return folder


def write_cifar100(root: Path, train: int = 40, test: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        entry = {b"fine_labels": rng.integers(0, 100, n).tolist(),
                 b"coarse_labels": rng.integers(0, 20, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
    return folder


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d)
                                                          for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, train: int = 30, test: int = 12, gz: bool = False,
                seed: int = 0) -> Path:
    """MNIST/raw/ with the four idx files (optionally gzipped), as torchvision lays them out."""
    rng = np.random.default_rng(seed)
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, test)}
    for name, array in arrays.items():
        payload = _idx_bytes(np.asarray(array))
        if gz:
            with gzip.open(folder / (name + ".gz"), "wb") as handle:
                handle.write(payload)
        else:
            (folder / name).write_bytes(payload)
    return folder


# ----------------------------------------------------------------------------- running main.py


def run_main(args: list[str], cwd: Path | None = None, timeout: float = 300,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python main.py ARGS` in a fresh process; returns the completed process."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


# A small, fast dense-training config on the bundled digits data.
DIGITS_CONFIG = """
algo: training
arch: lenet_300_100
dataset: digits
epochs: 3
batch_size: 128
optimizer: sgd
lr: 0.05
lr_policy: cosine_lr
momentum: 0.9
wd: 0.0005
seed: 3
"""


@pytest.fixture
def digits_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "digits.yml", DIGITS_CONFIG)


def only_run_dir(log_dir: Path) -> Path:
    """The single run directory under `log_dir`."""
    dirs = [p for p in log_dir.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]
