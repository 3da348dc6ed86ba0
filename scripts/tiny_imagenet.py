"""Fetch, verify and arrange TinyImageNet under DEST (the work of ./load_tiny_imagenet.sh).

    python3 scripts/tiny_imagenet.py DEST [--expect CLASSES,TRAIN_PER_CLASS,VAL_PER_CLASS]

1. DEST/tiny-imagenet-200.zip is downloaded (from $TINY_IMAGENET_URL, default the official
   cs231n address) unless it is already there; a partial download never takes its name.
2. The zip is checked (CRC of every member, every member inside tiny-imagenet-200/) and
   extracted through a temporary folder inside DEST, then renamed to DEST/tiny-imagenet-200.
3. val/images/* are moved into val/<wnid>/ class folders using val/val_annotations.txt.
4. The result is verified: CLASSES class folders in train/ matching wnids.txt, exactly
   TRAIN_PER_CLASS images in each, VAL_PER_CLASS validation images per class (official:
   200, 500, 50; --expect is for cut-down copies).

Only paths inside DEST are created, moved or removed.  Each step is skipped when its result
is already there, so re-running is safe and an interrupted run continues where it stopped.
Standard library only.  Exit codes: 0 done; 1 download / verification failure; 2 bad
arguments.  Errors are one line on stderr.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.request
import zipfile

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"
OFFICIAL = (200, 500, 50)
JPEG = (".jpeg", ".jpg")


class Failure(Exception):
    """A step failed; the message is the one line to print."""


def download(url: str, zip_path: str) -> None:
    """Download `url` to `zip_path` via a `.part` file renamed when complete."""
    part = zip_path + ".part"
    print(f"downloading {url} -> {zip_path} ...", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (OSError, ValueError) as exc:
        if os.path.exists(part):
            os.remove(part)
        reason = getattr(exc, "reason", None) or exc
        raise Failure(f"cannot download {url} ({reason}); offline? put {FOLDER}.zip into "
                      f"{os.path.dirname(zip_path)} and run again") from None
    os.replace(part, zip_path)


def safe_members(archive: zipfile.ZipFile, zip_path: str) -> list[zipfile.ZipInfo]:
    """Every member, after checking it lies inside tiny-imagenet-200/ and its CRC is right."""
    members = archive.infolist()
    for info in members:
        parts = info.filename.replace("\\", "/").split("/")
        if parts[0] != FOLDER or ".." in parts or info.filename.startswith("/"):
            raise Failure(f"{zip_path}: unexpected member {info.filename!r} (not inside "
                          f"{FOLDER}/); refusing to extract")
    bad = archive.testzip()
    if bad is not None:
        raise Failure(f"{zip_path}: member {bad} is corrupt (CRC mismatch); delete the zip "
                      f"and run again")
    return members


def extract(zip_path: str, dest: str) -> None:
    """Extract the zip into DEST/.tiny-imagenet-200.partial, then rename into place."""
    staging = os.path.join(dest, f".{FOLDER}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(staging, members=safe_members(archive, zip_path))
    except zipfile.BadZipFile as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise Failure(f"{zip_path}: not a valid zip ({exc}); delete it and run again") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(os.path.join(staging, FOLDER), os.path.join(dest, FOLDER))
    shutil.rmtree(staging, ignore_errors=True)


def arrange_val(root: str) -> int:
    """Move val/images/<file> to val/<wnid>/<file> per val_annotations.txt; returns the
    number of files moved (0 when already arranged)."""
    val = os.path.join(root, "val")
    loose = os.path.join(val, "images")
    if not os.path.isdir(loose):
        return 0
    annotations = os.path.join(val, "val_annotations.txt")
    if not os.path.isfile(annotations):
        raise Failure(f"{annotations} is missing; cannot sort {loose} into class folders")
    moved = 0
    with open(annotations, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or "/" in fields[0] or "/" in fields[1] or \
                    fields[1].strip() in ("", ".", "..", "images"):
                raise Failure(f"{annotations}:{number}: expected 'file<TAB>wnid ...'")
            name, wnid = fields[0].strip(), fields[1].strip()
            src, dst = os.path.join(loose, name), os.path.join(val, wnid, name)
            if os.path.isfile(src):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.replace(src, dst)
                moved += 1
            elif not os.path.isfile(dst):
                raise Failure(f"{annotations}:{number}: {name} is neither in {loose} nor in "
                              f"{os.path.dirname(dst)}")
    left = os.listdir(loose)
    if left:
        raise Failure(f"{loose}: {len(left)} file(s) not named in {annotations}, e.g. "
                      f"{sorted(left)[0]}")
    os.rmdir(loose)
    return moved


def _jpegs(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return [f for f in os.listdir(folder) if f.lower().endswith(JPEG)]


def verify(root: str, expect: tuple[int, int, int]) -> None:
    """Check class folders and per-class image counts; raise Failure naming the first gap."""
    classes, train_each, val_each = expect
    wnids_path = os.path.join(root, "wnids.txt")
    if not os.path.isfile(wnids_path):
        raise Failure(f"{wnids_path} is missing")
    with open(wnids_path, encoding="utf-8") as handle:
        wnids = [line.strip() for line in handle if line.strip()]
    if len(wnids) != classes or len(set(wnids)) != classes:
        raise Failure(f"{wnids_path} lists {len(set(wnids))} distinct classes, "
                      f"expected {classes}")
    for wnid in wnids:
        found = len(_jpegs(os.path.join(root, "train", wnid, "images")))
        if found != train_each:
            raise Failure(f"{root}/train/{wnid}/images holds {found} JPEGs, "
                          f"expected {train_each}")
        found = len(_jpegs(os.path.join(root, "val", wnid)))
        if found != val_each:
            raise Failure(f"{root}/val/{wnid} holds {found} JPEGs, expected {val_each}")


def run(dest: str, expect: tuple[int, int, int] = OFFICIAL, url: str = URL) -> str:
    """Steps 1–4 for DEST; returns a one-line summary."""
    root = os.path.join(dest, FOLDER)
    if not os.path.isdir(root):
        os.makedirs(dest, exist_ok=True)
        zip_path = os.path.join(dest, FOLDER + ".zip")
        if not os.path.isfile(zip_path):
            download(url, zip_path)
        extract(zip_path, dest)
    moved = arrange_val(root)
    verify(root, expect)
    classes, train_each, val_each = expect
    return (f"{root}: {classes} classes, {classes * train_each} training and "
            f"{classes * val_each} validation images in class folders"
            + (f" ({moved} validation images moved)" if moved else " (already arranged)"))


def _expect(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive integers "
                                         f"CLASSES,TRAIN_PER_CLASS,VAL_PER_CLASS, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="load_tiny_imagenet.sh",
                                     description="Download, verify and arrange TinyImageNet "
                                                 "into DEST/tiny-imagenet-200.")
    parser.add_argument("dest", metavar="DEST", help="folder that receives tiny-imagenet-200/")
    parser.add_argument("--expect", type=_expect, default=OFFICIAL,
                        help="CLASSES,TRAIN_PER_CLASS,VAL_PER_CLASS (default 200,500,50)")
    args = parser.parse_args(argv)
    if os.path.exists(args.dest) and not os.path.isdir(args.dest):
        print(f"error: {args.dest} exists and is not a folder", file=sys.stderr)
        return 2
    try:
        print(run(args.dest, args.expect, os.environ.get("TINY_IMAGENET_URL") or URL))
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
