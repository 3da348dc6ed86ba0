"""Dataset readers on tiny files in the real formats, splits and the device loader."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

import data
from args_helper import resolve
from data.augment import normalize, random_crop, random_flip
from data.loader import DeviceLoader
from conftest import write_cifar10, write_cifar100, write_mnist
from utils.errors import DataError


def _cfg(*argv):
    return resolve(["--algo", "training", "--download", "false", *argv])


def test_digits_split_is_fixed_disjoint_and_honest():
    cfg = _cfg("--dataset", "digits")
    a, b = data.load_splits(cfg), data.load_splits(_cfg("--dataset", "digits", "--seed", "9"))
    assert (len(a.train_y), len(a.val_y), len(a.test_y)) == (1257, 180, 360)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.val_x, b.val_x)  # not seed-bound
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape[1:] == (1, 8, 8)
    assert int(a.train_x.max()) == 255
    # the three splits partition the 1,797 images: their label histograms add up
    from sklearn.datasets import load_digits
    counts = torch.bincount(torch.cat([a.train_y, a.val_y, a.test_y]), minlength=10)
    assert counts.tolist() == np.bincount(load_digits().target, minlength=10).tolist()
    full = data.load_splits(_cfg("--dataset", "digits", "--use-full-data"))
    assert (len(full.train_y), len(full.val_y), len(full.test_y)) == (1437, 0, 360)


def test_cifar10_reader_on_pickle_batches(tmp_path):
    folder = write_cifar10(tmp_path, per_batch=12, test=20)
    splits = data.load_splits(_cfg("--dataset", "CIFAR10", "--data", str(tmp_path),
                                   "--val-size", "10"))
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (50, 10, 20)
    assert splits.train_x.shape[1:] == (3, 32, 32) and splits.num_classes == 10
    assert (splits.crop_padding, splits.flip) == (4, True)
    assert splits.mean == (0.491, 0.482, 0.447)
    with open(folder / "test_batch", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    expected = torch.from_numpy(raw[b"data"].reshape(-1, 3, 32, 32))
    assert torch.equal(splits.test_x, expected)
    assert splits.test_y.tolist() == raw[b"labels"]
    # train + val together are exactly the five training batches
    all_train = torch.cat([splits.train_y, splits.val_y]).sort().values
    labels = sum((pickle.load(open(folder / f"data_batch_{i}", "rb"), encoding="bytes")
                  [b"labels"] for i in range(1, 6)), [])
    assert all_train.tolist() == sorted(labels)


def test_cifar10_found_in_a_cifar10_subfolder(tmp_path):
    write_cifar10(tmp_path / "cifar10")
    splits = data.load_splits(_cfg("--dataset", "CIFAR10", "--data", str(tmp_path),
                                   "--use-full-data"))
    assert len(splits.train_y) == 60


def test_cifar100_reader(tmp_path):
    write_cifar100(tmp_path, train=40, test=20)
    splits = data.load_splits(_cfg("--dataset", "CIFAR100", "--data", str(tmp_path),
                                   "--val-size", "8"))
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (32, 8, 20)
    assert splits.num_classes == 100 and splits.mean == (0.5071, 0.4867, 0.4408)


def test_cifar_reader_refuses_arbitrary_pickles(tmp_path):
    folder = write_cifar10(tmp_path)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0],
                     "evil": __import__("os").getcwd}, handle)  # a reference to os
    with pytest.raises(DataError, match="not a CIFAR pickle batch"):
        data.load_splits(_cfg("--dataset", "CIFAR10", "--data", str(tmp_path)))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_reader(tmp_path, gz):
    write_mnist(tmp_path, train=30, test=12, gz=gz)
    splits = data.load_splits(_cfg("--dataset", "MNIST", "--data", str(tmp_path),
                                   "--val-size", "5"))
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (25, 5, 12)
    assert splits.train_x.shape[1:] == (1, 28, 28) and splits.mean == (0.1307,)


def test_mnist_truncated_file_is_a_data_error(tmp_path):
    folder = write_mnist(tmp_path)
    path = folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="header says"):
        data.load_splits(_cfg("--dataset", "MNIST", "--data", str(tmp_path)))


def test_synthetic_is_deterministic_and_sized():
    a = data.load_splits(_cfg("--dataset", "synthetic", "--synthetic-size", "200"))
    b = data.load_splits(_cfg("--dataset", "synthetic", "--synthetic-size", "200"))
    assert (len(a.train_y), len(a.val_y), len(a.test_y)) == (180, 20, 40)
    assert torch.equal(a.train_x, b.train_x) and a.train_x.shape[1:] == (3, 32, 32)


def _loader(n=50, seed=0, batch=16, **kw):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(n)
    return DeviceLoader(images, labels, batch, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "cpu",
                        train=True, crop_padding=kw.get("pad", 2), flip=True, seed=seed)


def test_loader_same_seed_same_batches_and_epochs_differ():
    a, b, c = _loader(seed=5), _loader(seed=5), _loader(seed=6)
    batches = lambda loader: [(x.clone(), y.clone()) for x, y in loader]  # noqa: E731
    first_a, first_b, first_c = batches(a), batches(b), batches(c)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb)
               for (xa, ya), (xb, yb) in zip(first_a, first_b))
    assert not torch.equal(torch.cat([y for _, y in first_a]),
                           torch.cat([y for _, y in first_c]))
    a.set_epoch(1)
    second = batches(a)
    assert not torch.equal(torch.cat([y for _, y in second]),
                           torch.cat([y for _, y in first_a]))
    # every image once per epoch
    assert sorted(torch.cat([y for _, y in second]).tolist()) == list(range(50))


def test_loader_skips_a_trailing_single_image_batch():
    loader = _loader(n=33, batch=16)
    sizes = [len(y) for _, y in loader]
    assert sizes == [16, 16] and len(loader) == 2
    eval_loader = DeviceLoader(torch.zeros(33, 1, 4, 4, dtype=torch.uint8), torch.arange(33),
                               16, (0.0,), (1.0,), "cpu", train=False)
    assert [len(y) for _, y in eval_loader] == [16, 16, 1]


def test_random_crop_equals_padding_then_cropping():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (6, 3, 8, 8), dtype=torch.uint8)
    cropped = random_crop(images, 2, g)
    g2 = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 5, (6,), generator=g2)
    dx = torch.randint(0, 5, (6,), generator=g2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(6):
        expected = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(cropped[i], expected)
    assert (cropped == 0).any()           # zero padding shows up at some offsets


def test_flip_and_normalize_match_torchvision():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (8, 3, 5, 5), dtype=torch.uint8)
    flipped = random_flip(images, g)
    for i in range(8):
        assert torch.equal(flipped[i], images[i]) or torch.equal(flipped[i], images[i].flip(2))
    mean, std = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
    ours = normalize(images, torch.tensor(mean).view(1, 3, 1, 1),
                     torch.tensor(std).view(1, 3, 1, 1))
    pipeline = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    for i in range(8):
        pil = Image.fromarray(images[i].permute(1, 2, 0).numpy())
        assert torch.allclose(ours[i], pipeline(pil), atol=1e-6)


def test_augmented_crop_distribution_matches_torchvision_padding():
    # torchvision's RandomCrop(32, padding=4) on a PIL image pads with black (0): our crop of
    # an all-white image must show the same border statistics.
    g = torch.Generator().manual_seed(0)
    white = torch.full((4000, 1, 32, 32), 255, dtype=torch.uint8)
    ours = random_crop(white, 4, g).float().mean().item() / 255
    torch.manual_seed(0)
    crop = T.RandomCrop(32, padding=4)
    pil = Image.fromarray(np.full((32, 32), 255, np.uint8))
    theirs = np.mean([np.asarray(crop(pil)).mean() / 255 for _ in range(4000)])
    expected = np.mean([(32 - abs(dy - 4)) * (32 - abs(dx - 4)) / 1024  # over 9×9 offsets
                        for dy in range(9) for dx in range(9)])
    assert ours == pytest.approx(expected, abs=0.003)
    assert theirs == pytest.approx(expected, abs=0.003)
