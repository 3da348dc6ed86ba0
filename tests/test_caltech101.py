"""Caltech-101 from torchvision's on-disk layout (real JPEG files), with upstream's split."""
from __future__ import annotations

import os

import pytest
import torch
import torchvision.transforms as T
from PIL import Image

import data
import main
from args_helper import resolve
from conftest import CALTECH_CLASSES, write_caltech101, write_config
from utils.errors import DataError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _splits(root, *argv):
    return data.load_splits(resolve(["--algo", "training", "--dataset", "Caltech101",
                                     "--data", str(root), "--workers", "0", *argv]))


def test_caltech101_layout_classes_and_upstream_split(tmp_path):
    from sklearn.model_selection import train_test_split

    base = write_caltech101(tmp_path, per_class=5)
    splits = _splits(tmp_path)
    assert splits.classes == sorted(CALTECH_CLASSES)             # BACKGROUND_Google is no class
    assert (splits.channels, splits.image_size, splits.num_classes) == (3, 224, 3)
    assert (splits.mean, splits.std) == (IMAGENET_MEAN, IMAGENET_STD)
    # 15 images: 20 % → val (stratified: one per class); 25 % of the other 12 → test
    assert splits.sizes() == "train 9 / val 3 / test 3 images"
    assert sorted(label for _, label in splits.val_samples) == [0, 1, 2]
    everything = splits.train_samples + splits.val_samples + splits.test_samples
    assert len({path for path, _ in everything}) == 15
    assert all("BACKGROUND_Google" not in path for path, _ in everything)
    for path, label in everything:
        assert os.path.dirname(path) == str(base / splits.classes[label])
    # the split is scikit-learn's, drawn as upstream drew it, over the sorted file list
    listed = sorted((str(base / c / f), i) for i, c in enumerate(splits.classes)
                    for f in os.listdir(base / c))
    labels = [label for _, label in listed]
    rest, val = train_test_split(listed, test_size=0.2, stratify=labels, random_state=42)
    train, test = train_test_split(rest, test_size=0.25, random_state=42)
    assert (splits.train_samples, splits.val_samples, splits.test_samples) == \
        (train, val, test)


def test_caltech101_images_are_resized_and_normalised_without_augmentation(tmp_path):
    write_caltech101(tmp_path, per_class=5)
    splits = _splits(tmp_path)
    loaders = splits.make_loaders(4, torch.device("cpu"), seed=0)
    reference = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for loader, samples in ((loaders.train, None), (loaders.test, splits.test_samples)):
        x, y = next(iter(loader))
        assert x.shape == (4 if samples is None else 3, 3, 224, 224)
        if samples is None:       # training images: the resized files too, in some order
            expected = {}
            for path, label in splits.train_samples:
                image = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
                expected[path] = reference(image)
            for image in x:
                assert any(torch.allclose(image, e, atol=1e-5) for e in expected.values())
        else:
            for i, (path, label) in enumerate(samples):
                image = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
                assert torch.allclose(x[i], reference(image), atol=1e-5)
                assert y[i].item() == label


def test_caltech101_upstream_layout_without_the_caltech101_folder(tmp_path):
    write_caltech101(tmp_path / "unpacked", per_class=5)
    (tmp_path / "unpacked" / "caltech101" / "101_ObjectCategories").rename(
        tmp_path / "101_ObjectCategories")
    assert _splits(tmp_path).sizes() == "train 9 / val 3 / test 3 images"


def test_caltech101_missing_or_too_small(tmp_path):
    with pytest.raises(DataError, match="Caltech-101 files not found.*101_ObjectCategories"):
        _splits(tmp_path)
    write_caltech101(tmp_path, per_class=1)
    with pytest.raises(DataError, match="cannot draw upstream's stratified 60/20/20 split"):
        _splits(tmp_path)


def test_caltech101_training_run(tmp_path):
    # two categories (the smallest set upstream's split accepts), a small network: ~4 s
    write_caltech101(tmp_path / "data", per_class=5, classes=CALTECH_CLASSES[:2])
    cfg = write_config(tmp_path / "c.yml", """
weight_training: true
arch: resnet20
dataset: Caltech101
epochs: 1
batch_size: 8
lr: 0.01
""")
    rc = main.main(["--config", str(cfg), "--data", str(tmp_path / "data"), "--log-dir",
                    str(tmp_path / "runs"), "--quiet", "--workers", "0"])
    assert rc == 0
    run_dir = next((tmp_path / "runs").iterdir())
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("train,")
    header, values = rows[0].split(","), rows[1].split(",")
    # 6 / 2 / 2 images: accuracies are multiples of 1/6 and 1/2
    assert float(values[header.index("test_acc")]) in (0.0, 50.0, 100.0)
    state = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert state["fc.weight"].shape == (2, 64)
