"""Convert an image-class-folder tree into an ffcv `.beton` file for FfcvImageNet.

    python -m data.write_ffcv SRC_DIR OUT.beton [--max-resolution 500]
        [--compress-probability 0.5] [--jpeg-quality 90] [--workers N] [--classes-from DIR]

SRC_DIR/<class>/... image files become (image, label) records; labels are the positions of
the class folders in sorted order (of `--classes-from DIR` when given, so that val/ gets the
labels of train/).  Defaults match upstream's train_500_0.50_90 files: longer side at most
500 pixels, half of the images stored as JPEG of quality 90, the rest raw.  The file is
written under a temporary name and renamed into place when complete.
Exit codes: 0 written; 2 bad arguments, unreadable images or ffcv missing (one line).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from PIL import Image

from data.image_folder import class_folders, scan_class_folders
from utils.errors import UsageError


class _FolderImages:
    """Indexable (RGB uint8 H×W×3 array, label) records; an unreadable file becomes a 1×1
    black image and its path is appended to `failures_path` (checked after writing)."""

    def __init__(self, samples: list[tuple[str, int]], failures_path: str):
        self.samples = samples
        self.failures_path = failures_path

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            with Image.open(path) as handle:
                pixels = np.asarray(handle.convert("RGB"), dtype=np.uint8)
        except OSError as exc:
            with open(self.failures_path, "a", encoding="utf-8") as log:
                log.write(f"{path}: {str(exc).splitlines()[0][:120]}\n")
            pixels = np.zeros((1, 1, 3), dtype=np.uint8)
        return pixels, label


def read_samples(src: str, classes_from: str | None) -> tuple[list[str], list]:
    """(classes, samples) of the class folders under `src`."""
    if not os.path.isdir(src):
        raise UsageError(f"{src}: no such folder")
    classes = class_folders(classes_from or src)
    if not classes:
        raise UsageError(f"{classes_from or src} holds no class folders "
                         f"(expected SRC_DIR/<class>/<image files>)")
    unknown = sorted(set(class_folders(src)) - set(classes))
    if unknown:
        raise UsageError(f"{src}/{unknown[0]}: class folder not in {classes_from}")
    samples = scan_class_folders(src, classes)
    if not samples:
        raise UsageError(f"{src} holds no image files")
    return classes, samples


def write_beton(src: str, out: str, *, max_resolution: int = 500,
                compress_probability: float = 0.5, jpeg_quality: int = 90, workers: int = 1,
                classes_from: str | None = None) -> tuple[int, int]:
    """Write SRC's images to OUT atomically; returns (images, classes)."""
    from data.ffcv_imagenet import require_ffcv

    classes, samples = read_samples(src, classes_from)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UsageError(f"{out}: folder {folder} does not exist")
    require_ffcv("python -m data.write_ffcv")
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".", suffix=".tmp",
                               dir=folder)
    os.close(fd)
    failures = tmp + ".failures"
    try:
        fields = {"image": RGBImageField(write_mode="proportion", max_resolution=max_resolution,
                                         compress_probability=compress_probability,
                                         jpeg_quality=jpeg_quality),
                  "label": IntField()}
        DatasetWriter(tmp, fields, num_workers=workers).from_indexed_dataset(
            _FolderImages(samples, failures))
        if os.path.exists(failures):
            with open(failures, encoding="utf-8") as log:
                bad = log.read().splitlines()
            raise UsageError(f"{len(bad)} unreadable image(s), e.g. {bad[0]}; nothing written")
        os.replace(tmp, out)
    finally:
        for path in (tmp, failures):
            if os.path.exists(path):
                os.remove(path)
    return len(samples), len(classes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.write_ffcv",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("src", metavar="SRC_DIR", help="folder of class folders of images")
    parser.add_argument("out", metavar="OUT.beton", help="the .beton file to write")
    parser.add_argument("--max-resolution", type=int, default=500,
                        help="longer side of the stored images at most (default 500)")
    parser.add_argument("--compress-probability", type=float, default=0.5,
                        help="share of images stored as JPEG (default 0.5)")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (90)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="writer processes (default: all cores)")
    parser.add_argument("--classes-from", metavar="DIR",
                        help="take the class list (labels) from DIR's class folders")
    args = parser.parse_args(argv)
    problems = [f"--{name.replace('_', '-')} must be {rule}, got {value}" for name, value, ok,
                rule in (("max_resolution", args.max_resolution, args.max_resolution >= 1,
                          ">= 1"),
                         ("compress_probability", args.compress_probability,
                          0 <= args.compress_probability <= 1, "in [0, 1]"),
                         ("jpeg_quality", args.jpeg_quality, 1 <= args.jpeg_quality <= 100,
                          "in [1, 100]"),
                         ("workers", args.workers, args.workers >= 1, ">= 1")) if not ok]
    if not args.out.endswith(".beton"):
        problems.append(f"OUT must end in .beton, got {args.out}")
    try:
        if problems:
            raise UsageError(problems[0])
        images, classes = write_beton(
            args.src, args.out, max_resolution=args.max_resolution,
            compress_probability=args.compress_probability, jpeg_quality=args.jpeg_quality,
            workers=args.workers, classes_from=args.classes_from)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {images} images of {classes} classes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
