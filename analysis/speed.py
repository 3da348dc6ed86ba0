"""Inference speed of a run's ticket: dense vs masked vs exported, at one batch size.

    python -m analysis.speed RUN [--batch-size 256] [--device auto|cpu|cuda]
                             [--repeats 20] [--warmup 5] [--threads N]

Networks (eval mode, torch.inference_mode, one random batch of the dataset's image size):
  dense     the architecture with every weight (plain layers; what the unpruned net costs)
  masked    the ticket as trained: masked layers, weight × mask in every forward
  exported  channel tickets: the network without the removed channels (models/shrink.py);
            n:m tickets on CUDA: the linear layers whose weight takes PyTorch's 2:4
            semi-structured form run with it (convolutions have no such kernel and stay
            dense); on CPU there is no n:m kernel, so no row.
For n:m tickets on CUDA every 2:4 layer's GEMM (its weight as the (out, reduction) matrix
times batch × output-positions columns) is also timed dense and semi-structured.
CPU runs in float32, CUDA in bfloat16.  The networks are timed in turns, `repeats` times each
after `warmup` untimed calls; the fastest call is kept (as bench/train_speed.py does: on a
shared machine the other load only ever adds time), the median is recorded too.
Weights: checkpoints/final.pt when the run has it, else ticket.pt.
Writes RUN/speed.csv and RUN/speed.md (and prints the table); analysis.report lists them.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

from utils.errors import ConfigError, UsageError

COLUMNS = ["device", "dtype", "threads", "batch_size", "network", "ms_per_batch",
           "ms_median", "images_per_s", "speedup_vs_dense", "theoretical_speedup", "note"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(calls: dict, repeats: int, warmup: int, device: torch.device) -> dict:
    """(fastest, median) seconds of each zero-argument callable, timed in turns."""
    with torch.inference_mode():
        for _ in range(warmup):
            for call in calls.values():
                call()
        _sync(device)
        seconds = {name: [] for name in calls}
        for _ in range(repeats):
            for name, call in calls.items():
                _sync(device)
                start = time.perf_counter()
                call()
                _sync(device)
                seconds[name].append(time.perf_counter() - start)
    return {name: (min(values), statistics.median(values)) for name, values in seconds.items()}


def semi_structured_linears(plain, problems: dict, to_sparse) -> list[str]:
    """Give every nn.Linear of `plain` whose 2:4 GEMM matrix has no problem (models/nm_pack)
    its weight converted by `to_sparse` (torch.sparse.to_sparse_semi_structured on CUDA);
    returns the layers converted ("name (failed: why)" where the conversion raised)."""
    converted = []
    for name, module in plain.named_modules():
        if isinstance(module, torch.nn.Linear) and problems.get(name, "dense") is None:
            try:
                sparse = to_sparse(module.weight.detach())
            except (RuntimeError, NotImplementedError) as exc:
                converted.append(f"{name} (failed: {str(exc).splitlines()[0][:80]})")
                continue
            module.weight = torch.nn.Parameter(sparse, requires_grad=False)
            converted.append(name)
    return converted


def nm_problems(model, n: int, m: int) -> dict:
    """Per masked layer: None when its weight is n:m and its GEMM matrix takes the 2:4
    semi-structured form, else why not."""
    from models.layers import MASKED_LAYER_TYPES
    from models.nm_pack import gemm_matrix, grouped, semi_structured_problem

    out = {}
    for name, layer in model.named_modules():
        if isinstance(layer, MASKED_LAYER_TYPES):
            if layer.weight.shape[1] % m or not bool(
                    (grouped(layer.mask != 0, m).sum(dim=1) == n).all()):
                out[name] = f"not {n}:{m}"
            else:
                out[name] = semi_structured_problem(gemm_matrix(layer.effective_weight()))
    return out


def measure(model, spec, cfg, device: torch.device, batch_size: int, repeats: int,
            warmup: int) -> list[dict]:
    """The rows of one device: dense, masked, exported (and n:m layer GEMMs on CUDA)."""
    from models.flops import count_flops
    from models.shrink import plain_copy

    shape = (spec.channels, spec.image_size, spec.image_size)
    theory = count_flops(model, shape)["theoretical_speedup"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    kind = cfg.prune_granularity
    nets = {"dense": plain_copy(model), "masked": copy.deepcopy(model)}
    notes = {"dense": "all weights", "masked": "weight × mask every forward"}
    if kind == "channel":
        nets["exported"] = plain_copy(model, remove_channels=True)
        notes["exported"] = "removed channels taken out"
    nets = {k: v.to(device=device, dtype=dtype).eval() for k, v in nets.items()}
    problems = {}
    if kind == "n:m" and device.type == "cuda":
        from torch.sparse import to_sparse_semi_structured

        problems = nm_problems(model, cfg.prune_n, cfg.prune_m)
        plain = plain_copy(model).to(device=device, dtype=dtype).eval()
        converted = semi_structured_linears(plain, problems, to_sparse_semi_structured)
        nets["exported"] = plain
        notes["exported"] = ("2:4 semi-structured: " + ", ".join(converted)) if converted \
            else "no linear layer takes the 2:4 form; all dense"
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn((batch_size, *shape), generator=generator).to(device=device,
                                                                     dtype=dtype)
    timings = time_calls({k: (lambda net=net: net(batch)) for k, net in nets.items()},
                         repeats, warmup, device)
    threads = torch.get_num_threads() if device.type == "cpu" else ""
    rows = [_row(device, dtype, threads, batch_size, name, timings[name], timings["dense"],
                 theory if name != "dense" else 1.0, notes[name], batch_size)
            for name in nets]
    if kind == "n:m" and device.type == "cpu":
        rows.append({"device": str(device), "dtype": "float32", "batch_size": batch_size,
                     "network": "exported", "note": "no n:m kernel on the CPU (CUDA only)"})
    if problems:
        rows += gemm_rows(nets["masked"], problems, device, dtype, batch_size, shape, repeats,
                          warmup)
    return rows


def gemm_rows(model, problems: dict, device, dtype, batch_size: int, shape, repeats: int,
              warmup: int) -> list[dict]:
    """Per 2:4 layer: its GEMM dense and semi-structured (CUDA only)."""
    from torch.sparse import to_sparse_semi_structured

    from models.flops import output_positions
    from models.nm_pack import gemm_matrix

    positions = output_positions(model, shape)
    rows = []
    layers = dict(model.named_modules())
    for name, problem in problems.items():
        if problem is not None:
            continue
        matrix = gemm_matrix(layers[name].effective_weight().detach()).to(device, dtype)
        columns = min(batch_size * positions[name], 1 << 18)
        columns = max(64, columns - columns % 64)
        other = torch.randn((matrix.shape[1], columns), device=device, dtype=dtype)
        try:
            sparse = to_sparse_semi_structured(matrix)
            timings = time_calls({"dense": lambda: torch.mm(matrix, other),
                                  "sparse": lambda: torch.mm(sparse, other)},
                                 repeats, warmup, device)
        except (RuntimeError, NotImplementedError) as exc:
            rows.append({"device": str(device), "dtype": str(dtype).replace("torch.", ""),
                         "network": f"gemm {name}", "note": f"failed: {str(exc)[:120]}"})
            continue
        size = f"{matrix.shape[0]}×{matrix.shape[1]} · {matrix.shape[1]}×{other.shape[1]}"
        rows.append(_row(device, dtype, "", batch_size, f"gemm {name} dense",
                         timings["dense"], timings["dense"], 1.0, size, None))
        rows.append(_row(device, dtype, "", batch_size, f"gemm {name} 2:4",
                         timings["sparse"], timings["dense"], 2.0, size, None))
    return rows


def _row(device, dtype, threads, batch_size, name, timing, dense_timing, theory, note,
         images) -> dict:
    seconds, median = timing
    return {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
            "threads": threads, "batch_size": batch_size, "network": name,
            "ms_per_batch": 1000.0 * seconds, "ms_median": 1000.0 * median,
            "images_per_s": images / seconds if images else None,
            "speedup_vs_dense": dense_timing[0] / seconds, "theoretical_speedup": theory,
            "note": note}


def markdown(rows: list[dict]) -> str:
    """The speed table as markdown."""
    lines = ["| device | dtype | batch | network | ms / batch (fastest) | median | images / s | "
             "speed-up vs dense | theoretical | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def num(key, fmt):
            value = r.get(key)
            return "" if value in (None, "") else format(value, fmt)
        threads = f" ({r['threads']} threads)" if r.get("threads") not in (None, "") else ""
        lines.append(f"| {r['device']}{threads} | {r['dtype']} | {r.get('batch_size', '')} | "
                     f"{r['network']} | {num('ms_per_batch', '.2f')} | "
                     f"{num('ms_median', '.2f')} | "
                     f"{num('images_per_s', ',.0f')} | {num('speedup_vs_dense', '.2f')} | "
                     f"{num('theoretical_speedup', '.2f')} | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def weights_of(run_dir: str) -> str:
    """The run's trained weights (checkpoints/final.pt), else its ticket.pt."""
    for path in (os.path.join(run_dir, "checkpoints", "final.pt"),
                 os.path.join(run_dir, "ticket.pt")):
        if os.path.isfile(path):
            return path
    raise ConfigError(f"{run_dir}: neither checkpoints/final.pt nor ticket.pt")


def devices_for(choice: str) -> list[torch.device]:
    """cpu, cuda or auto (the CPU, and the GPU when CUDA is present)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    if choice == "cpu":
        return [torch.device("cpu")]
    if choice == "cuda":
        return [torch.device("cuda")]
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                    else [])


def main(argv: list[str] | None = None) -> int:
    from analysis.export import load_run_model
    from utils.checkpoint import write_text
    from utils.logging import write_csv

    parser = argparse.ArgumentParser(prog="python -m analysis.speed",
                                     description="Inference speed: dense vs ticket.")
    parser.add_argument("run", help="run directory")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0: PyTorch's default)")
    args = parser.parse_args(argv)
    try:
        for key in ("batch_size", "repeats", "warmup"):
            if getattr(args, key) < (0 if key == "warmup" else 1):
                raise ConfigError(f"--{key.replace('_', '-')} must be positive, got "
                                  f"{getattr(args, key)}")
        if not os.path.isdir(args.run):
            raise ConfigError(f"no run directory at {args.run}")
        devices = devices_for(args.device)
        cfg, spec, model = load_run_model(weights_of(args.run), None, ["--device", "cpu"])
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for device in devices:
        rows += measure(model, spec, cfg, device, args.batch_size, args.repeats, args.warmup)
    write_csv(os.path.join(args.run, "speed.csv"), COLUMNS, rows)
    text = markdown(rows)
    write_text(os.path.join(args.run, "speed.md"),
               f"# Inference speed of {os.path.basename(os.path.normpath(args.run))}\n\n"
               f"{cfg.arch}, prune_granularity {cfg.prune_granularity}, weights "
               f"{os.path.relpath(weights_of(args.run), args.run)}; fastest and median of "
               f"{args.repeats} timed batches after {args.warmup} warm-up ones\n\n{text}")
    print(text)
    print(f"written: {args.run}/speed.csv, speed.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
