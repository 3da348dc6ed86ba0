"""TinyImageNet and ImageNet readers on tiny real-format folders, the streaming loader, and
load_tiny_imagenet.sh on a fake zip (no network)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

import data
from args_helper import resolve
from conftest import (REPO, TINY_WNIDS, only_run_dir, run_main, write_config, write_imagenet,
                      write_tiny_imagenet)
from data.image_folder import PadCropFlip, ResizeCenterCrop, random_resized_box
from data.stream import StreamLoader
from utils.errors import DataError

TINY_MEAN = (0.48025, 0.44807, 0.39755)
TINY_STD = (0.27699, 0.26906, 0.28208)


def _cfg(*argv):
    return resolve(["--algo", "training", "--download", "false", *argv])


def _names(samples):
    return [(os.path.basename(path), label) for path, label in samples]


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


# ----------------------------------------------------------------------------- TinyImageNet


def test_tiny_imagenet_official_layout_splits(tmp_path):
    write_tiny_imagenet(tmp_path)
    splits = data.load_splits(_cfg("--dataset", "TinyImageNet", "--data", str(tmp_path)))
    assert splits.classes == sorted(TINY_WNIDS) and splits.num_classes == 3
    assert (splits.channels, splits.image_size, splits.num_train) == (3, 64, 12)
    assert splits.sizes() == "train 12 / val 6 / test 6 images"
    assert (splits.mean, splits.std) == (TINY_MEAN, TINY_STD)
    # per class, by file name: first half → val, second half → test.  Class 1 holds val_1,
    # val_4, val_7, val_10; in file-name order val_1, val_10 | val_4, val_7.
    assert _names(splits.val_samples) == [("val_0.JPEG", 0), ("val_3.JPEG", 0),
                                          ("val_1.JPEG", 1), ("val_10.JPEG", 1),
                                          ("val_11.JPEG", 2), ("val_2.JPEG", 2)]
    assert _names(splits.test_samples) == [("val_6.JPEG", 0), ("val_9.JPEG", 0),
                                           ("val_4.JPEG", 1), ("val_7.JPEG", 1),
                                           ("val_5.JPEG", 2), ("val_8.JPEG", 2)]
    labels = [label for _, label in splits.train_samples]
    assert labels == [0] * 4 + [1] * 4 + [2] * 4
    assert all(f"/train/{TINY_WNIDS[label]}/images/" in path
               for path, label in splits.train_samples)
    # use_full_data does not change TinyImageNet's splits (nothing is held out of train)
    full = data.load_splits(_cfg("--dataset", "TinyImageNet", "--data", str(tmp_path),
                                 "--use-full-data"))
    assert full.sizes() == splits.sizes()


def test_tiny_imagenet_class_folder_val_gives_the_same_splits(tmp_path):
    official = data.load_splits(_cfg("--dataset", "TinyImageNet", "--data",
                                     str(write_tiny_imagenet(tmp_path / "a").parent)))
    folders = data.load_splits(_cfg("--dataset", "TinyImageNet", "--data",
                                    str(write_tiny_imagenet(tmp_path / "b", layout="folders")
                                        .parent)))
    assert _names(folders.val_samples) == _names(official.val_samples)
    assert _names(folders.test_samples) == _names(official.test_samples)
    assert _names(folders.train_samples) == _names(official.train_samples)


def test_tiny_imagenet_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DataError) as info:
        data.load_splits(_cfg("--dataset", "TinyImageNet", "--data", str(tmp_path)))
    message = str(info.value)
    assert "\n" not in message and "load_tiny_imagenet.sh" in message
    assert str(tmp_path / "tiny-imagenet-200") in message


def test_tiny_imagenet_annotation_naming_an_unknown_class(tmp_path):
    base = write_tiny_imagenet(tmp_path)
    path = base / "val" / "val_annotations.txt"
    path.write_text(path.read_text().replace("n01629819", "n99999999", 1))
    with pytest.raises(DataError, match=r"val_annotations.txt:2: unknown class 'n99999999'"):
        data.load_splits(_cfg("--dataset", "TinyImageNet", "--data", str(tmp_path)))


def test_missing_dataset_through_main_exits_2_and_writes_nothing(tmp_path):
    cfg = write_config(tmp_path / "tiny.yml", f"""
algo: training
arch: resnet20
dataset: TinyImageNet
data: {tmp_path / 'nothing'}
""")
    proc = run_main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs")])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TinyImageNet files not found" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nothing").exists()


# ----------------------------------------------------------------------------- streaming loader


def _tiny_loaders(tmp_path, workers, seed=5, batch=5):
    root = tmp_path / "data"
    if not root.exists():
        write_tiny_imagenet(root)
    splits = data.load_splits(_cfg("--dataset", "TinyImageNet", "--data", str(root),
                                   "--workers", str(workers)))
    return splits, splits.make_loaders(batch, torch.device("cpu"), seed)


def test_stream_loader_is_seeded_and_independent_of_the_worker_count(tmp_path):
    _, two = _tiny_loaders(tmp_path, workers=2)
    _, none = _tiny_loaders(tmp_path, workers=0)
    assert isinstance(two.train, StreamLoader) and two.train.workers == 2
    first = _batches(two.train)
    again = _batches(two.train)                  # same epoch again (persistent workers)
    single = _batches(none.train)                # no worker processes
    for batches in (again, single):
        assert len(batches) == len(first) == len(two.train) == 3      # 12 images: 5 + 5 + 2
        for (xa, ya), (xb, yb) in zip(first, batches):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
    two.train.set_epoch(1)
    second = _batches(two.train)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, second))
    two.train.set_epoch(0, seed=6)
    other_seed = _batches(two.train)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other_seed))
    x, y = first[0]
    assert x.dtype == torch.float32 and x.shape == (5, 3, 64, 64) and y.dtype == torch.int64


def test_stream_loader_resumes_mid_epoch_with_the_same_batches(tmp_path):
    _, loaders = _tiny_loaders(tmp_path, workers=0)
    loaders.train.set_epoch(2)
    whole = _batches(loaders.train)
    loaders.train.set_epoch(2, start_batch=1)
    tail = _batches(loaders.train)
    assert len(whole) == 3 and len(tail) == 2
    for (xa, ya), (xb, yb) in zip(whole[1:], tail):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    loaders.train.set_epoch(3)                   # a new epoch starts from its first batch
    assert len(_batches(loaders.train)) == 3
    assert len(_batches(loaders.train_eval)) == 3 and loaders.train_eval.train is False


def test_stream_loader_epoch_covers_every_image_once(tmp_path):
    splits, loaders = _tiny_loaders(tmp_path, workers=0, batch=4)
    order = [i for batch in loaders.train.epoch_batches() for i, _ in batch]
    assert sorted(order) == list(range(12)) and len(loaders.train) == 3
    labels = torch.cat([y for _, y in loaders.train]).sort().values
    assert labels.tolist() == sorted(label for _, label in splits.train_samples)


def test_stream_loader_evaluation_images_are_the_normalised_files(tmp_path):
    splits, loaders = _tiny_loaders(tmp_path, workers=0, batch=4)
    x, y = next(iter(loaders.test))
    path, label = splits.test_samples[0]
    reference = T.Compose([T.ToTensor(), T.Normalize(TINY_MEAN, TINY_STD)])(
        Image.open(path).convert("RGB"))
    assert torch.allclose(x[0], reference, atol=1e-5) and y[0].item() == label
    assert [len(b) for _, b in loaders.test] == [4, 2]          # evaluation keeps every image


def test_training_images_are_padded_crops_or_their_mirror(tmp_path):
    splits, loaders = _tiny_loaders(tmp_path, workers=0, batch=12)
    x, y = next(iter(loaders.train))
    mean = torch.tensor(TINY_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TINY_STD).view(1, 3, 1, 1)
    pixels = torch.round((x * std + mean) * 255).to(torch.uint8)
    order = [i for i, _ in next(loaders.train.epoch_batches())]
    flips = 0
    for row, index in enumerate(order):
        original = torch.from_numpy(np.array(Image.open(splits.train_samples[index][0])
                                             .convert("RGB"))).permute(2, 0, 1)
        padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9)
                   for flip in (False, True)
                   if torch.equal(pixels[row], (lambda c: c.flip(2) if flip else c)(
                       padded[:, dy:dy + 64, dx:dx + 64]))]
        assert matches, f"image {index} is no padded crop of its file"
        flips += matches[0][2]
    assert 0 < flips < 12


def test_pad_crop_flip_uses_only_the_given_generator():
    image = Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3))
    a = PadCropFlip(64, 4)(image, np.random.default_rng(3))
    b = PadCropFlip(64, 4)(image, np.random.default_rng(3))
    assert np.array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- ImageNet


def test_imagenet_folders_holdout_and_transforms(tmp_path):
    base = write_imagenet(tmp_path, train_per_class=4, val_per_class=2)
    splits = data.load_splits(_cfg("--dataset", "ImageNet", "--data", str(tmp_path),
                                   "--val-size", "3", "--split-seed", "4", "--workers", "0"))
    assert splits.classes == sorted(os.listdir(base / "train")) and splits.image_size == 224
    assert splits.sizes() == "train 9 / val 3 / test 6 images"
    again = data.load_splits(_cfg("--dataset", "ImageNet", "--data", str(tmp_path),
                                  "--val-size", "3", "--split-seed", "4", "--seed", "9"))
    assert again.val_samples == splits.val_samples                      # fixed by split_seed
    every_train_file = [(str(path), label) for label, name in
                        enumerate(sorted(os.listdir(base / "train")))
                        for path in sorted((base / "train" / name).iterdir())]
    assert sorted(splits.train_samples + splits.val_samples) == every_train_file
    assert all("/val/" in path for path, _ in splits.test_samples)
    full = data.load_splits(_cfg("--dataset", "ImageNet", "--data", str(tmp_path),
                                 "--use-full-data", "--workers", "1"))
    assert full.sizes() == "train 12 / val 0 / test 6 images"
    loaders = full.make_loaders(4, torch.device("cpu"), 0)
    x, y = next(iter(loaders.train))
    assert x.shape == (4, 3, 224, 224) and loaders.val.num_images == 0
    # evaluation = torchvision's Resize(256) + CenterCrop(224) + ToTensor + Normalize
    x, _ = next(iter(loaders.test))
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(
        Image.open(full.test_samples[0][0]).convert("RGB"))
    assert torch.allclose(x[0], reference, atol=1e-5)


def test_random_resized_box_stays_inside_and_covers_the_scale_range():
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(2000):
        left, top, w, h = random_resized_box(100, 100, rng)
        assert 0 <= left and left + w <= 100 and 0 <= top and top + h <= 100 and w > 0 < h
        shares.append(w * h / (100 * 100))
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    assert min(shares) < 0.1 and max(shares) > 0.95
    # an extreme panorama falls back to the largest central crop of aspect ratio 4/3
    assert random_resized_box(1000, 10, np.random.default_rng(1), scale=(0.99, 1.0)) == \
        ((1000 - 13) // 2, 0, 13, 10)


def test_resize_center_crop_keeps_the_aspect_ratio():
    image = Image.new("RGB", (300, 200))
    assert ResizeCenterCrop(256, 224)(image, None).size == (224, 224)


def test_imagenet_val_without_class_folders_is_a_data_error(tmp_path):
    base = write_imagenet(tmp_path)
    for folder in (base / "val").iterdir():
        for image in folder.iterdir():
            image.rename(base / "val" / f"{folder.name}_{image.name}")
        folder.rmdir()
    with pytest.raises(DataError, match="val/<wnid>/"):
        data.load_splits(_cfg("--dataset", "ImageNet", "--data", str(tmp_path)))
    with pytest.raises(DataError, match="ImageNet files not found"):
        data.load_splits(_cfg("--dataset", "ImageNet", "--data", str(tmp_path / "none")))


# ----------------------------------------------------------------------------- end to end


def test_training_run_on_tiny_imagenet(tmp_path):
    write_tiny_imagenet(tmp_path / "data")
    cfg = write_config(tmp_path / "tiny.yml", f"""
algo: training
arch: lenet_300_100
dataset: TinyImageNet
data: {tmp_path / 'data'}
epochs: 1
batch_size: 4
lr: 0.05
workers: 1
""")
    proc = run_main(["--config", str(cfg), "--log-dir", str(tmp_path / "runs"), "--quiet"])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((only_run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert summary["status"] == "done" and summary["dataset"] == "TinyImageNet"
    assert 0 <= summary["test_acc"] <= 100 and 0 <= summary["val_acc"] <= 100
    assert "train 12 / val 6 / test 6 images" in proc.stdout


# ----------------------------------------------------------------------------- the script


def _zip_of(folder: Path, zip_path: Path, extra: dict | None = None) -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder.parent).as_posix())
        for name, text in (extra or {}).items():
            archive.writestr(name, text)
    return zip_path


def _script(dest: Path, *args: str, url: str = "http://127.0.0.1:9/tiny-imagenet-200.zip"):
    return subprocess.run([str(REPO / "load_tiny_imagenet.sh"), str(dest), *args],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TINY_IMAGENET_URL=url))


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


def test_load_tiny_imagenet_script_extracts_arranges_and_is_idempotent(tmp_path):
    source = write_tiny_imagenet(tmp_path / "src")
    dest = tmp_path / "box" / "dest"
    dest.mkdir(parents=True)
    _zip_of(source, dest / "tiny-imagenet-200.zip")
    bystander = tmp_path / "box" / "notes.txt"          # upstream deleted every *.txt around
    bystander.write_text("keep me")
    proc = _script(dest, "--expect", "3,4,4")
    assert proc.returncode == 0, proc.stderr
    assert "12 validation images moved" in proc.stdout
    root = dest / "tiny-imagenet-200"
    assert not (root / "val" / "images").exists()
    assert sorted(p.name for p in (root / "val" / TINY_WNIDS[1]).iterdir()) == [
        "val_1.JPEG", "val_10.JPEG", "val_4.JPEG", "val_7.JPEG"]
    assert sorted(os.listdir(dest)) == ["tiny-imagenet-200", "tiny-imagenet-200.zip"]
    assert sorted(os.listdir(tmp_path / "box")) == ["dest", "notes.txt"]
    assert bystander.read_text() == "keep me"
    before = _tree(dest)
    again = _script(dest, "--expect", "3,4,4")
    assert again.returncode == 0 and "already arranged" in again.stdout
    assert _tree(dest) == before
    # the arranged folder reads like the official layout
    official = data.load_splits(_cfg("--dataset", "TinyImageNet", "--data",
                                     str(tmp_path / "src")))
    arranged = data.load_splits(_cfg("--dataset", "TinyImageNet", "--data", str(dest)))
    assert _names(arranged.val_samples) == _names(official.val_samples)
    assert _names(arranged.test_samples) == _names(official.test_samples)


def test_load_tiny_imagenet_script_finishes_an_interrupted_arrangement(tmp_path):
    root = write_tiny_imagenet(tmp_path)
    partly = root / "val" / TINY_WNIDS[0]
    partly.mkdir()
    (root / "val" / "images" / "val_0.JPEG").rename(partly / "val_0.JPEG")
    proc = _script(tmp_path, "--expect", "3,4,4")
    assert proc.returncode == 0, proc.stderr
    assert "11 validation images moved" in proc.stdout
    assert len(list(partly.iterdir())) == 4


@pytest.mark.parametrize("problem,needle", [
    ("offline", "cannot download http://127.0.0.1:9/"),
    ("counts", "holds 4 JPEGs, expected 5"),
    ("escape", "not inside tiny-imagenet-200/"),
])
def test_load_tiny_imagenet_script_failures_are_one_line(tmp_path, problem, needle):
    dest = tmp_path / "dest"
    dest.mkdir()
    expect = "3,4,4"
    if problem == "counts":
        _zip_of(write_tiny_imagenet(tmp_path / "src"), dest / "tiny-imagenet-200.zip")
        expect = "3,5,4"
    elif problem == "escape":
        _zip_of(write_tiny_imagenet(tmp_path / "src"), dest / "tiny-imagenet-200.zip",
                {"tiny-imagenet-200/../../evil.txt": "x"})
    proc = _script(dest, "--expect", expect)
    assert proc.returncode == 1, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], \
        proc.stderr
    assert not (tmp_path / "evil.txt").exists()
    if problem == "offline":
        assert os.listdir(dest) == []                     # no partial download left
    if problem == "escape":
        assert sorted(os.listdir(dest)) == ["tiny-imagenet-200.zip"]


def test_load_tiny_imagenet_script_usage(tmp_path):
    proc = _script(tmp_path, "--expect", "3,x")
    assert proc.returncode == 2 and "--expect" in proc.stderr
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "tiny_imagenet.py")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "DEST" in proc.stderr
