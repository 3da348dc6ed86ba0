"""FfcvImageNet and `python -m data.write_ffcv`: a tiny image folder converted to .beton
files and read back on the CPU.  Without ffcv installed (it is an optional extra) the
real-path tests skip, unless REQUIRE_FFCV=1 (set by .ci/run) turns the skip into a failure;
the one-line install error is tested either way."""
from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
import torch

import data
import main as entry
from args_helper import resolve
from conftest import REPO, write_class_folders
from utils.errors import DataError

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def _need_ffcv():
    if os.environ.get("REQUIRE_FFCV") == "1":
        import ffcv  # noqa: F401  (CI: a missing extra must fail, not skip)
    else:
        pytest.importorskip("ffcv")


def _cfg(*argv):
    return resolve(["--algo", "training", "--dataset", "FfcvImageNet", *argv])


def _write_ffcv(*args):
    return subprocess.run([sys.executable, "-m", "data.write_ffcv", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_without_ffcv_selecting_it_is_a_one_line_install_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ffcv", None)          # import ffcv → ImportError
    with pytest.raises(DataError,
                       match=r"needs the optional ffcv extra.*pip install '\.\[ffcv\]'"):
        data.load_splits(_cfg("--data", str(tmp_path)))
    log_dir = tmp_path / "runs"
    code = entry.main(["--algo", "training", "--dataset", "FfcvImageNet", "--data",
                       str(tmp_path), "--log-dir", str(log_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "libturbojpeg0-dev" in err[0]
    assert not log_dir.exists()
    from data import write_ffcv
    write_class_folders(tmp_path / "src", per_class=1)
    assert write_ffcv.main([str(tmp_path / "src"), str(tmp_path / "x.beton")]) == 2
    assert "ffcv extra" in capsys.readouterr().err and not (tmp_path / "x.beton").exists()


def test_write_ffcv_usage_errors(tmp_path, capsys):
    from data import write_ffcv

    proc = _write_ffcv(tmp_path / "missing", tmp_path / "out.beton")   # the real command line
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ")
    assert "no such folder" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert write_ffcv.main([str(tmp_path / "empty"), str(tmp_path / "out.beton")]) == 2
    assert "no class folders" in capsys.readouterr().err
    assert write_ffcv.main([str(tmp_path / "empty"), str(tmp_path / "out.ffcv")]) == 2
    assert "must end in .beton" in capsys.readouterr().err
    assert write_ffcv.main([str(tmp_path / "empty"), str(tmp_path / "o.beton"),
                            "--jpeg-quality", "101"]) == 2
    assert "--jpeg-quality must be in [1, 100], got 101" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]    # nothing written


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_write_ffcv_refuses_unreadable_images(tmp_path, capsys):
    _need_ffcv()
    from data import write_ffcv

    write_class_folders(tmp_path / "src", per_class=1)
    (tmp_path / "src" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    code = write_ffcv.main([str(tmp_path / "src"), str(tmp_path / "out.beton"),
                            "--workers", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "unreadable image" in err[-1] and "broken.jpg" in err[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]      # nothing written


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_beton_round_trip_through_the_ffcv_imagenet_loaders(tmp_path, capsys):
    _need_ffcv()
    train = write_class_folders(tmp_path / "folders" / "train", per_class=4, solid=True)
    test = write_class_folders(tmp_path / "folders" / "val", per_class=2, seed=1, solid=True)
    betons = tmp_path / "betons"
    betons.mkdir()
    # in-process: a fresh `python -m data.write_ffcv` pays seconds of numba compilation
    from data import write_ffcv
    assert write_ffcv.main([str(tmp_path / "folders" / "train"), str(betons / "train.beton"),
                            "--workers", "1"]) == 0
    assert f"wrote 12 images of 3 classes to {betons / 'train.beton'}" in \
        capsys.readouterr().out
    assert write_ffcv.main([str(tmp_path / "folders" / "val"), str(betons / "val.beton"),
                            "--workers", "1", "--classes-from",
                            str(tmp_path / "folders" / "train")]) == 0
    assert sorted(p.name for p in betons.iterdir()) == ["train.beton", "val.beton"]

    splits = data.load_splits(_cfg("--data", str(betons), "--val-size", "3",
                                   "--split-seed", "2", "--workers", "1"))
    assert (splits.num_classes, splits.channels, splits.image_size) == (3, 3, 224)
    assert splits.sizes() == "train 9 / val 3 / test 6 images" and splits.num_train == 9
    loaders = splits.make_loaders(4, torch.device("cpu"), 11)

    # test split: val.beton in file order; each solid colour comes back with its label
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in loaders.test])
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (6, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [label for _, label, _ in test]
    colours = torch.round((x * STD + MEAN) * 255).mean(dim=(2, 3))
    expected = torch.tensor([colour for _, _, colour in test], dtype=torch.float32)
    assert torch.allclose(colours, expected, atol=4), (colours, expected)
    assert [len(b) for b in ys] == [4, 2]

    # training: each image is told apart by its colour (crops of a solid image keep it)
    palette = torch.tensor([colour for _, _, colour in train], dtype=torch.float32)

    def epoch_images(loader, epoch, start_batch=0):
        loader.set_epoch(epoch, start_batch=start_batch)
        seen = []
        for x, y in loader:
            colours = torch.round((x * STD + MEAN) * 255).mean(dim=(2, 3))
            distance, which = (colours[:, None, :] - palette[None]).abs().amax(2).min(1)
            assert distance.max() < 5
            assert y.tolist() == [train[i][1] for i in which.tolist()]  # label ↔ image
            seen.append(which.tolist())
        return seen

    first, again, other = (epoch_images(loaders.train, epoch) for epoch in (0, 0, 1))
    assert [len(b) for b in first] == [4, 4]        # 9 training images: a single is skipped
    assert first == again                           # same seed and epoch → same order
    assert first != other
    assert epoch_images(loaders.train, 0, start_batch=1) == first[1:]     # mid-epoch resume
    assert len(set(sum(first, []))) == 8               # no image twice in an epoch
    assert set(sum(first + other, [])) <= set(splits.train_idx.tolist())   # val never trains
    assert len(set(splits.train_idx.tolist()) | set(splits.val_idx.tolist())) == 12
    val_x, val_y = next(iter(loaders.val))
    assert val_x.shape == (3, 3, 224, 224) and loaders.val.num_images == 3
    # numba (under ffcv) reports KeyErrors from finalizers of its compiled functions when
    # they are collected; let that happen here, inside the filter above
    del loaders, splits
    gc.collect()


def test_ffcv_imagenet_missing_files(tmp_path):
    _need_ffcv()
    with pytest.raises(DataError, match="FfcvImageNet files not found.*data.write_ffcv"):
        data.load_splits(_cfg("--data", str(tmp_path)))
    (tmp_path / "train.beton").write_bytes(b"garbage")
    (tmp_path / "val.beton").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not an ffcv .beton file"):
        data.load_splits(_cfg("--data", str(tmp_path)))
