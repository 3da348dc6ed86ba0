"""ImageNet from ffcv `.beton` files (optional extra: `pip install '.[ffcv]'`, README).

Files: train.beton and val.beton (written by `python -m data.write_ffcv`, fields `image`
and `label`) in <data> or <data>/ffcv, or upstream's train_500_0.50_90.ffcv /
val_500_0.50_90.ffcv in <data>.  val.beton is the test set; the validation set is
`val_size` images (default 10,000) of train.beton held out by a shuffle seeded with
`split_seed`, unless `use_full_data`.

Pipelines (decoding on the CPU by ffcv's `workers` threads): training random-resized crop
224 + horizontal flip; evaluation central crop of ratio 224/256 resized to 224.  Images are
normalised on the training device.  The order of each epoch is seeded by (seed, epoch); the
crop and flip draws come from numba's generator inside ffcv and are not reproducible.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from data.augment import normalize
from data.imagenet import DEFAULT_VAL, IMAGE_SIZE, MEAN, RESIZE, STD
from data.loader import Loaders, epoch_seed
from data.splits import holdout_indices
from data.stream import effective_workers
from utils.errors import DataError, DataMissing

INSTALL_HINT = ("apt-get install -y libturbojpeg0-dev libopencv-dev pkg-config, then "
                "pip install '.[ffcv]' (or EXTRAS=test,ffcv ./test.sh); see README 'Datasets'")
FILE_PAIRS = (("train.beton", "val.beton"), ("ffcv/train.beton", "ffcv/val.beton"),
              ("train_500_0.50_90.ffcv", "val_500_0.50_90.ffcv"))


def require_ffcv(what: str) -> None:
    """Raise DataError (one line, how to install) when ffcv cannot be imported."""
    try:
        import ffcv  # noqa: F401
        import ffcv.loader  # noqa: F401
    except (ImportError, OSError) as exc:
        raise DataError(f"{what} needs the optional ffcv extra, which is not usable here "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:80]}); install "
                        f"it: {INSTALL_HINT}") from None


def find_beton_files(root: str) -> tuple[str, str] | None:
    for train, val in FILE_PAIRS:
        paths = os.path.join(root, train), os.path.join(root, val)
        if all(os.path.isfile(p) for p in paths):
            return paths
    return None


def beton_labels(path: str) -> np.ndarray:
    """The label column of a .beton written with fields `image` (RGB) and `label` (int)."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.reader import Reader

    try:
        reader = Reader(path)
    except Exception as exc:  # noqa: BLE001 (ffcv raises assorted errors on a bad file)
        raise DataError(f"{path}: not an ffcv .beton file ({type(exc).__name__}: "
                        f"{str(exc)[:100]})") from None
    kinds = {name: type(handler) for name, handler in reader.handlers.items()}
    if kinds.get("image") is not RGBImageField or kinds.get("label") is not IntField:
        raise DataError(f"{path}: expected fields 'image' (RGBImageField) and 'label' "
                        f"(IntField), found {sorted(kinds)}; write it with "
                        f"python -m data.write_ffcv")
    column = list(reader.handlers).index("label")
    return np.asarray(reader.metadata[f"f{column}"], dtype=np.int64)


class FfcvLoader:
    """ffcv Loader behind the DeviceLoader interface: yields (normalised float32 images,
    int64 labels) on `device`; training mode shuffles, augments and skips a trailing batch
    of a single image."""

    def __init__(self, path: str, indices: np.ndarray, batch_size: int, mean: tuple,
                 std: tuple, device: torch.device, *, train: bool, workers: int, seed: int = 0):
        self.path = path
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.train = train
        self.workers = max(1, workers)
        self.seed = seed
        self.epoch = 0
        self._loader = None
        self._built_for_seed = None
        self.start_batch = 0

    def set_epoch(self, epoch: int, seed: int | None = None, start_batch: int = 0) -> None:
        """Select the epoch (and seed); training then starts at batch `start_batch` (resume:
        the skipped batches are still decoded, since ffcv cannot seek into an epoch)."""
        self.epoch = epoch
        self.start_batch = start_batch
        if seed is not None:
            self.seed = seed

    def __len__(self) -> int:
        full, rest = divmod(len(self.indices), self.batch_size)
        return full + (1 if rest > (1 if self.train else 0) else 0)

    @property
    def num_images(self) -> int:
        return len(self.indices)

    def _build(self):
        from ffcv.fields.basics import IntDecoder
        from ffcv.fields.rgb_image import (CenterCropRGBImageDecoder,
                                           RandomResizedCropRGBImageDecoder)
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

        side = (IMAGE_SIZE, IMAGE_SIZE)
        if self.train:
            image = [RandomResizedCropRGBImageDecoder(side), RandomHorizontalFlip()]
        else:
            image = [CenterCropRGBImageDecoder(side, ratio=IMAGE_SIZE / RESIZE)]
        # ffcv adds seed + epoch for the order: a per-run base keeps (seed, epoch) distinct
        base = epoch_seed(self.seed, 0) % (2 ** 31 - 2 ** 24)
        return Loader(self.path, batch_size=self.batch_size, num_workers=self.workers,
                      order=OrderOption.RANDOM if self.train else OrderOption.SEQUENTIAL,
                      seed=base, indices=self.indices, drop_last=False,
                      pipelines={"image": image + [ToTensor(), ToTorchImage()],
                                 "label": [IntDecoder(), ToTensor()]})

    def __iter__(self):
        if len(self.indices) == 0:
            return
        if self._loader is None or self._built_for_seed != self.seed:
            self._loader, self._built_for_seed = self._build(), self.seed
        self._loader.next_epoch = self.epoch
        for batch, (images, labels) in enumerate(self._loader):
            if self.train and batch < self.start_batch:
                continue
            if self.train and labels.shape[0] < 2:
                break
            images = images.to(self.device, non_blocking=True)
            labels = labels.reshape(-1).to(self.device, dtype=torch.long, copy=True)
            yield normalize(images, self.mean, self.std), labels


class FfcvSplits:
    """ImageNet in two .beton files; implements the dataset-object protocol of
    data/splits.py."""

    name = "FfcvImageNet"
    channels = 3
    image_size = IMAGE_SIZE

    def __init__(self, train_path: str, test_path: str, train_idx, val_idx, test_count: int,
                 num_classes: int, workers: int):
        self.train_path, self.test_path = train_path, test_path
        self.train_idx, self.val_idx = np.asarray(train_idx), np.asarray(val_idx)
        self.test_count = test_count
        self.num_classes = num_classes
        self.workers = workers

    @property
    def num_train(self) -> int:
        return len(self.train_idx)

    def sizes(self) -> str:
        return (f"train {len(self.train_idx)} / val {len(self.val_idx)} / "
                f"test {self.test_count} images")

    def make_loaders(self, batch_size: int, device: torch.device, seed: int) -> Loaders:
        def loader(path, indices, train):
            return FfcvLoader(path, indices, batch_size, MEAN, STD, device, train=train,
                              workers=self.workers, seed=seed)

        return Loaders(train=loader(self.train_path, self.train_idx, True),
                       val=loader(self.train_path, self.val_idx, False),
                       test=loader(self.test_path, np.arange(self.test_count), False),
                       train_eval=loader(self.train_path, self.train_idx, False))


def load_ffcv_imagenet_splits(cfg) -> FfcvSplits:
    require_ffcv("dataset FfcvImageNet")
    paths = find_beton_files(cfg.data)
    if paths is None:
        looked = ", ".join(os.path.join(cfg.data, f"{{{t},{v}}}") for t, v in FILE_PAIRS)
        raise DataMissing(f"FfcvImageNet files not found (looked for {looked}); convert the "
                        f"ImageNet folders with python -m data.write_ffcv "
                        f"<imagenet>/train {os.path.join(cfg.data, 'train.beton')} (and val/ "
                        f"to val.beton)")
    train_path, test_path = paths
    train_labels, test_labels = beton_labels(train_path), beton_labels(test_path)
    if len(train_labels) == 0 or len(test_labels) == 0:
        raise DataError(f"{train_path if len(train_labels) == 0 else test_path} holds no images")
    if cfg.use_full_data:
        train_idx, val_idx = np.arange(len(train_labels)), np.arange(0)
    else:
        val_size = DEFAULT_VAL if cfg.val_size is None else cfg.val_size
        train_idx, val_idx = (t.numpy() for t in holdout_indices(
            len(train_labels), val_size, cfg.split_seed, train_path))
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    return FfcvSplits(train_path, test_path, train_idx, val_idx, len(test_labels),
                      num_classes, effective_workers(cfg))
