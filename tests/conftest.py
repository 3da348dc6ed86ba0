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

# One intra-op thread in the tests and in every run they start: the models are tiny, and on
# a busy 2-core machine more threads than free cores make PyTorch's thread pool wait on
# descheduled threads (seen: 100x slower).  Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


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


# ----------------------------------------------------------------------------- image folders


def _solid_or_noise(rng, height: int, width: int, colour=None, gray: bool = False):
    from PIL import Image

    if colour is not None:
        pixels = np.empty((height, width, 3), np.uint8)
        pixels[:] = colour
    else:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    return image.convert("L") if gray else image


TINY_WNIDS = ("n01443537", "n01629819", "n01641577")


def write_tiny_imagenet(root: Path, train_per_class: int = 4, val_per_class: int = 4,
                        layout: str = "official", seed: int = 0) -> Path:
    """root/tiny-imagenet-200/ as the official zip unpacks it (wnids.txt, words.txt,
    train/<wnid>/images/<wnid>_<i>.JPEG + <wnid>_boxes.txt, val/images/val_<k>.JPEG +
    val_annotations.txt, test/images/) with 64×64 JPEGs (a few grayscale, as in the real
    set); layout "folders" puts the val images in val/<wnid>/ instead.  Val image k belongs to
    class k % 3, so with 4 per class class 1 holds val_1, val_4, val_7, val_10."""
    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True, exist_ok=True)
    (base / "test" / "images").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing {i}\n"
                                            for i, w in enumerate(TINY_WNIDS)))
    for wnid in TINY_WNIDS:
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True, exist_ok=True)
        boxes = []
        for i in range(train_per_class):
            name = f"{wnid}_{i}.JPEG"
            _solid_or_noise(rng, 64, 64, gray=(i == 1)).save(folder / name, format="JPEG")
            boxes.append(f"{name}\t0\t0\t63\t63\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    lines = []
    for k in range(val_per_class * len(TINY_WNIDS)):
        wnid, name = TINY_WNIDS[k % len(TINY_WNIDS)], f"val_{k}.JPEG"
        target = base / "val" / ("images" if layout == "official" else wnid)
        target.mkdir(parents=True, exist_ok=True)
        _solid_or_noise(rng, 64, 64).save(target / name, format="JPEG")
        lines.append(f"{name}\t{wnid}\t1\t2\t60\t61\n")
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    _solid_or_noise(rng, 64, 64).save(base / "test" / "images" / "test_0.JPEG", format="JPEG")
    if layout != "official":
        (base / "val" / "images").rmdir()
    return base


def write_class_folders(root: Path, per_class: int = 3, classes=("cat", "dog", "fox"),
                        seed: int = 0, solid: bool = False) -> list[tuple[Path, int, tuple]]:
    """root/<class>/img_<i>.(jpg|png) of assorted sizes (an ImageFolder tree); with `solid`
    every image is one distinct colour.  Returns (path, label, colour) in sorted order."""
    rng = np.random.default_rng(seed)
    written = []
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            height, width = (72, 96) if i % 2 else (90, 60)
            colour = (40 + 60 * label, 30 + 50 * i, 200 - 40 * label) if solid else None
            suffix, fmt = ("png", "PNG") if i % 2 else ("jpg", "JPEG")
            path = root / name / f"img_{i}.{suffix}"
            image = _solid_or_noise(rng, height, width, colour=colour)
            image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
            written.append((path, label, colour))
    return written


def write_imagenet(root: Path, train_per_class: int = 4, val_per_class: int = 2,
                   seed: int = 0) -> Path:
    """root/imagenet/{train,val}/<wnid>/ image folders (val arranged into class folders)."""
    base = root / "imagenet"
    classes = ("n01440764", "n01443537", "n01484850")
    write_class_folders(base / "train", train_per_class, classes, seed)
    write_class_folders(base / "val", val_per_class, classes, seed + 1)
    return base


CALTECH_CLASSES = ("Faces_easy", "Leopards", "accordion")


def write_caltech101(root: Path, per_class: int = 5, classes=CALTECH_CLASSES,
                     seed: int = 0) -> Path:
    """root/caltech101/101_ObjectCategories/<category>/image_XXXX.jpg as torchvision's
    Caltech101 download lays it out (variable-size JPEGs, one grayscale per category, and a
    BACKGROUND_Google folder that is not a category)."""
    rng = np.random.default_rng(seed)
    base = root / "caltech101" / "101_ObjectCategories"
    for name in (*classes, "BACKGROUND_Google"):
        (base / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class if name != "BACKGROUND_Google" else 2):
            height, width = (150, 200) if i % 2 else (240, 180)
            _solid_or_noise(rng, height, width, gray=(i == 2)).save(
                base / name / f"image_{i + 1:04d}.jpg", format="JPEG")
    return base


def interrupt_training_at(monkeypatch, call: int, module: str = "utils.phases",
                          function: str = "train_epoch"):
    """Make the `call`-th training epoch (`module.function`: utils.phases.train_epoch, or
    utils.packed_phase.train_epoch_packed for packed runs) raise KeyboardInterrupt, as Ctrl-C
    would; returns a function that restores the real one."""
    import importlib

    where = importlib.import_module(module)
    real = getattr(where, function)
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(where, function, dying)
    return lambda: monkeypatch.setattr(where, function, real)


def run_in_process(folder: Path, name: str, text: str, args=()) -> tuple[int, Path]:
    """Write config `text` as folder/name.yml and run main.main on it in this process with
    folder/runs as log dir; returns (exit code, log dir)."""
    import main

    folder.mkdir(parents=True, exist_ok=True)
    cfg = write_config(folder / f"{name}.yml", text)
    log_dir = folder / "runs"
    return main.main(["--config", str(cfg), "--log-dir", str(log_dir), "--quiet", *args]), log_dir
