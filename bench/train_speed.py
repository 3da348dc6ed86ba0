"""Training speed of this project's training path against a plain PyTorch reference.

    python bench/train_speed.py --arch resnet20 --dataset synthetic [--device cuda|cpu]
                                [--steps N] [--batch-size 128] [--workers 2] [--compile]

Both paths train the same architecture (ResNet-20) with the same batch size, optimizer and
number of steps on the same CIFAR-shaped synthetic images, in this one process:

(a) reference: the way the model is usually written in research code: a CIFAR-style
    `Dataset` over uint8 HWC arrays turned into PIL images, torchvision transforms
    (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), a `DataLoader`
    with `--workers` processes, a ResNet-20 written with plain `nn.Conv2d`, fp32, a host→device
    copy per batch and `loss.item()` after every step;
(b) this project: `data.DeviceLoader` (uint8 images on the device, batched seeded
    augmentation and normalisation there), masked layers (mask applied in the forward),
    `utils.train.train_epoch` (loss accumulated on the device, read once) and the fast-path
    options of `utils.fast` (bf16 autocast and channels_last on CUDA, cudnn.benchmark,
    fused/foreach optimizer steps, torch.compile with --compile).

For each path it prints images/s, seconds per CIFAR-size (50,000-image) training epoch and the
data pipeline alone (batches produced and placed on the device, no model), then the ratio
(b)/(a) and peak memory.  This is a script, not a test: numbers depend on the machine and its
load (the 1-minute load average is printed with them).
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

CIFAR_EPOCH = 50_000


# --------------------------------------------------------------------------- (a) reference


class CifarStyleDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does: uint8 HWC arrays → PIL image → transform."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform):
        self.data = images_hwc
        self.targets = labels
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        from PIL import Image

        image = Image.fromarray(self.data[index])
        return self.transform(image), int(self.targets[index])


class RefBlock(nn.Module):
    """Basic block with an option-A (subsample + zero-pad) shortcut, plain nn.Conv2d."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.pad = stride, planes - in_planes

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride != 1 else x
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class RefResNet20(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(RefBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def reference_loader(images_hwc, labels, mean, std, batch_size, workers, device):
    import torchvision.transforms as T

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    dataset = CifarStyleDataset(images_hwc, labels, transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def _batches(loader, count):
    """`count` batches, cycling over epochs of `loader` when needed."""
    return itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), count)


def run_reference(args, data, device, steps, warmup):
    images_hwc, labels, mean, std = data
    torch.manual_seed(0)
    loader = reference_loader(images_hwc, labels, mean, std, args.batch_size, args.workers,
                              device)
    model = RefResNet20().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    losses = []
    _reset_peak(device)
    started = None
    for i, (x, y) in enumerate(_batches(loader, warmup + steps)):
        if i == warmup:
            _sync(device)
            started = time.perf_counter()
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    _sync(device)
    seconds = time.perf_counter() - started
    peak = _peak(device)
    # the data pipeline alone: batches produced and copied to the device
    started = None
    for i, (x, y) in enumerate(_batches(loader, warmup + steps)):
        if i == warmup:
            _sync(device)
            started = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    _sync(device)
    data_seconds = time.perf_counter() - started
    del loader
    return {"seconds": seconds, "data_seconds": data_seconds, "last_loss": losses[-1],
            "peak": peak}


# --------------------------------------------------------------------------- (b) project


class _Limited:
    """The first `count` batches of a DeviceLoader, cycling over epochs."""

    def __init__(self, loader, count, start_epoch=0):
        self.loader, self.count, self.epoch = loader, count, start_epoch
        self.device = loader.device

    def __iter__(self):
        done = 0
        while done < self.count:
            self.loader.set_epoch(self.epoch)
            self.epoch += 1
            for batch in self.loader:
                if done == self.count:
                    return
                done += 1
                yield batch


def _project_config(args, device, *, graphs: bool, compile_: bool):
    import args_helper

    return args_helper.resolve(
        ["--arch", args.arch, "--dataset", args.dataset, "--batch-size", str(args.batch_size),
         "--synthetic-size", str(args.images), "--device", device.type,
         "--compile", str(compile_).lower(), "--cuda-graphs", str(graphs).lower(),
         "--val-size", "0", "--channels-last", args.channels_last,
         "--precision", args.precision, "--init", "kaiming_normal", "--quiet"])


def run_project(args, device, steps, warmup, *, graphs: bool = False, compile_: bool = False):
    """(b) the project's training path as `utils.phases.run_phase` drives it: the engine's
    train program (eager, CUDA graph, compiled forward) over the device-resident loader."""
    import data as data_module
    from models import InputSpec, build_model
    from utils.device import autocast_dtype
    from utils.fast import FastPath
    from utils.schedules import OptimizerSpec
    from utils.train import train_epoch

    cfg = _project_config(args, device, graphs=graphs, compile_=compile_)
    splits = data_module.load_splits(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, InputSpec(splits.num_classes, splits.channels, splits.image_size))
    model.to(device)
    engine = FastPath.from_config(cfg, device, report=print)
    engine.configure_backends()
    engine.prepare_model(model)
    dtype = autocast_dtype(cfg, device)
    program = engine.train_program(model, OptimizerSpec("sgd", 0.9, 5e-4), 0.1,
                                   autocast_dtype=dtype)
    loader = data_module.make_loaders(splits, args.batch_size, device, seed=0).train
    # the data pipeline alone (measured first, before the training threads are busy)
    for _ in _Limited(loader, warmup):
        pass
    _sync(device)
    started = time.perf_counter()
    for x, y in _Limited(loader, steps, start_epoch=2000):
        x = engine.input(x)
    _sync(device)
    data_seconds = time.perf_counter() - started
    _reset_peak(device)
    started = time.perf_counter()       # warm-up: compile and graph capture happen here
    train_epoch(model, _Limited(loader, warmup), program=program)
    _sync(device)
    setup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = train_epoch(model, _Limited(loader, steps, start_epoch=1000), program=program)
    _sync(device)
    seconds = time.perf_counter() - started
    peak = _peak(device)
    return {"seconds": seconds, "data_seconds": data_seconds, "last_loss": result["loss"],
            "peak": peak, "precision": "bf16 autocast" if dtype is not None else "fp32",
            "channels_last": engine.channels_last, "compile": bool(engine.compile),
            "graphs": program.captured, "setup_seconds": setup_seconds}, splits


def run_packed(args, device, steps, warmup, packing: str, count: int):
    """(c) `replicates: M` of the project: M copies trained together (`packing` streams or
    vmap, as `utils.packed_phase` builds them); the time of `steps` packed steps (each trains
    every copy on its own batch)."""
    import data as data_module
    from models import InputSpec, build_model
    from utils.device import autocast_dtype
    from utils.fast import FastPath
    from utils.packed import VmapPack
    from utils.packed_streams import StreamPack
    from utils.schedules import OptimizerSpec

    cfg = _project_config(args, device, graphs=device.type == "cuda", compile_=False)
    splits = data_module.load_splits(cfg)
    models, loaders = [], []
    for k in range(count):
        torch.manual_seed(k)
        models.append(build_model(cfg, InputSpec(splits.num_classes, splits.channels,
                                                 splits.image_size)).to(device))
        loaders.append(data_module.make_loaders(splits, args.batch_size, device, k).train)
    dtype = autocast_dtype(cfg, device)
    spec = OptimizerSpec("sgd", 0.9, 5e-4)
    engine = FastPath.for_copies(cfg, device, count, report=print)
    if packing == "vmap":
        pack = VmapPack(models, spec, 0.1, autocast_dtype=dtype, engine=engine)
    else:
        pack = StreamPack(models, spec, 0.1, engine, autocast_dtype=dtype)
    _reset_peak(device)
    pack.train_epoch([_Limited(l, warmup) for l in loaders])
    _sync(device)
    started = time.perf_counter()
    result = pack.train_epoch([_Limited(l, steps, 1000) for l in loaders])
    _sync(device)
    return {"seconds": time.perf_counter() - started, "peak": _peak(device),
            "last_loss": sum(result["loss"]) / len(result["loss"]),
            "captured": _pack_captured(pack)}


def _pack_captured(pack) -> bool:
    """Whether every training step of the pack replays a recorded CUDA graph."""
    if hasattr(pack, "programs"):                       # streams: one program per copy
        return all(program.captured for program in pack.programs)
    return getattr(pack.runner, "graph", None) is not None       # vmap: one step


# --------------------------------------------------------------------------- helpers


def _faster(best, new):
    """The attempt with the shorter training time; the data-pipeline time is the shorter too."""
    if best is None:
        return new
    out = dict(best if best["seconds"] <= new["seconds"] else new)
    out["data_seconds"] = min(best["data_seconds"], new["data_seconds"])
    out["peak"] = max(best["peak"], new["peak"])
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device):
    """Peak GPU memory allocated (CUDA) or the process's peak RSS so far (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PATHS = {"eager": dict(graphs=False, compile_=False),
         "graph": dict(graphs=True, compile_=False),
         "compile": dict(graphs=False, compile_=True),
         "compile+graph": dict(graphs=True, compile_=True)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet20", choices=("resnet20",))
    parser.add_argument("--dataset", default="synthetic", choices=("synthetic",))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=None,
                        help="timed training steps per path (default: 30 on CPU, 300 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default: 5 on CPU, 30 on CUDA); compile "
                             "and graph capture happen in them (reported as setup s)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2,
                        help="DataLoader worker processes of the reference")
    parser.add_argument("--images", type=int, default=10_000,
                        help="synthetic training images (CIFAR shape 3x32x32)")
    parser.add_argument("--paths", default=None,
                        help="comma-separated project paths to time: eager, graph, compile, "
                             "compile+graph (default: eager,graph,compile+graph on CUDA, "
                             "eager on CPU)")
    parser.add_argument("--compile", action="store_true",
                        help="add the compile path (on CPU: compile without graphs)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the project's precision option (auto: bf16 autocast on CUDA)")
    parser.add_argument("--channels-last", default="null", choices=("null", "true", "false"),
                        help="the project's channels_last option (null: on for CUDA only)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure the reference and the first path this many times, "
                             "alternating; report the fastest of each (noisy machines)")
    parser.add_argument("--replicates", default="",
                        help="comma-separated M values: also time M packed copies "
                             "(replicates: M), e.g. 1,8; empty = skip")
    parser.add_argument("--packings", default="streams,vmap",
                        help="packings to time with --replicates (streams, vmap)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (300 if device.type == "cuda" else 30)
    warmup = args.warmup if args.warmup is not None else (30 if device.type == "cuda" else 5)
    paths = (args.paths.split(",") if args.paths else
             ["eager", "graph", "compile+graph"] if device.type == "cuda" else ["eager"])
    if args.compile and not args.paths:
        paths.append("compile+graph" if device.type == "cuda" else "compile")
    paths = list(dict.fromkeys(paths))
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"--paths: unknown path {unknown[0]!r} (choose from {', '.join(PATHS)})")
    if device.type != "cuda" and any(PATHS[p]["graphs"] for p in paths):
        parser.error("--paths: graph paths need --device cuda")

    print(f"# {' '.join(sys.argv)}")
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                if device.type == "cuda" else
                                f" ({platform.processor() or platform.machine()}, "
                                f"{os.cpu_count()} cores, {torch.get_num_threads()} threads)"))
    import PIL
    import torchvision

    print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, pillow {PIL.__version__}")
    print(f"arch {args.arch}, batch {args.batch_size}, {steps} timed steps after {warmup} "
          f"warm-up steps, reference workers {args.workers}, best of {args.repeats} "
          f"alternating attempts; load average at start "
          f"{os.getloadavg()[0]:.2f}")

    measured, reference = {}, None
    for _ in range(args.repeats):   # alternate with the reference; keep the fastest attempts
        p, splits = run_project(args, device, steps, warmup, **PATHS[paths[0]])
        measured[paths[0]] = _faster(measured.get(paths[0]), p)
        hwc = splits.train_x.permute(0, 2, 3, 1).contiguous().numpy()
        data = (hwc, splits.train_y.numpy(), splits.mean, splits.std)
        reference = _faster(reference, run_reference(args, data, device, steps, warmup))
    images = steps * args.batch_size
    ref_ips = images / reference["seconds"]
    mem = "peak GPU MiB" if device.type == "cuda" else "peak RSS MiB*"
    print(f"\n{'path':<26} {'train img/s':>12} {'s/epoch':>8} {'vs (a)':>7} {'setup s':>8} "
          f"{'data img/s':>11} {mem:>14} {'last loss':>10}")

    def row(name, ips, r, setup=None):
        dps = images / r["data_seconds"] if "data_seconds" in r else float("nan")
        print(f"{name:<26} {ips:12.1f} {CIFAR_EPOCH / ips:8.3f} {ips / ref_ips:6.2f}x "
              f"{'' if setup is None else f'{setup:8.2f}':>8} {dps:11.1f} {r['peak']:14.1f} "
              f"{r['last_loss']:10.4f}", flush=True)

    row("(a) reference, fp32", ref_ips, reference)
    best_single = 0.0
    for path in paths:      # each row as soon as it is measured (a time limit keeps the rest)
        if path not in measured:
            measured[path] = run_project(args, device, steps, warmup, **PATHS[path])[0]
        r = measured[path]
        ips = images / r["seconds"]
        best_single = max(best_single, ips)
        label = f"(b) {path}" + (" (NOT captured)" if PATHS[path]["graphs"] and not r["graphs"]
                                 else "")
        row(label, ips, r, r["setup_seconds"])
    print_compile_break_even(measured, steps)
    for count in [int(m) for m in args.replicates.split(",") if m.strip()]:
        for packing in args.packings.split(","):
            packed = run_packed(args, device, steps, warmup, packing, count)
            mips = count * images / packed["seconds"]
            label = f"(c) packed {packing} M={count}" + (
                " (NOT captured)" if device.type == "cuda" and not packed["captured"] else "")
            print(f"{label:<26} {mips:12.1f} "
                  f"{CIFAR_EPOCH / mips:8.3f} {mips / ref_ips:6.2f}x {'':>8} {'':>11} "
                  f"{packed['peak']:14.1f} {packed['last_loss']:10.4f}   "
                  f"{mips / best_single:.2f}x the best single path")
    first = measured[paths[0]]
    print(f"\nproject: {first['precision']}, channels_last {first['channels_last']}; "
          f"(c) rows: model-images/s of all copies together; s/epoch = per 50k images of "
          f"one model")
    if device.type != "cuda":
        print("* CPU peak RSS is of this process so far; worker processes are not counted")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


def print_compile_break_even(measured: dict, steps: int) -> None:
    """How many training steps `compile` needs to win back its set-up time (the graph path
    without and with compiled kernels; utils.fast.COMPILE_MIN_STEPS is the default's bar)."""
    plain, compiled = measured.get("graph"), measured.get("compile+graph")
    if plain is None or compiled is None:
        return
    from utils.fast import COMPILE_MIN_STEPS
    saved = (plain["seconds"] - compiled["seconds"]) / steps
    extra = compiled["setup_seconds"] - plain["setup_seconds"]
    if saved <= 0:
        verdict = "never (compiled steps are not faster)"
    else:
        verdict = f"after {extra / saved:,.0f} steps ({saved * 1e3:.3f} ms saved per step)"
    print(f"compile pays back its {extra:.1f} s of extra set-up {verdict}; "
          f"the default turns it on for phases of >= {COMPILE_MIN_STEPS:,} steps", flush=True)


if __name__ == "__main__":
    main()
