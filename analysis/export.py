"""Export a structured ticket as a network that is really smaller, or in the sparse form of the
GPU kernels.

    python -m analysis.export RUN/ticket.pt --out DIR [--config RUN/config.yaml] [--device cuda]

Any model file of a run works (ticket.pt: the weights the ticket starts from; final.pt or
checkpoints/level_XX.pt: trained weights); the architecture comes from the run's config.yaml.

channel tickets (prune_granularity: channel): a plain nn.Module built without the removed
  channels (models/shrink.py) — `model_state.pt` (its state_dict, the kept channel indices
  and FLOPs; torch.load(..., weights_only=True) reads it) and `model.pt2` (torch.export, batch
  size dynamic; torch.export.load(path).module() runs it).  Its outputs are checked against
  the masked network's on a random batch before anything is written.
n:m tickets: `nm_weights.pt` with every n:m layer packed (kept values and their positions in
  each group of m, models/nm_pack.py) and, where the layer's GEMM matrix fits PyTorch's 2:4
  kernels, the tensors `torch.sparse.to_sparse_semi_structured` stores with its CUTLASS
  backend (values and int16 metadata, bfloat16); plus the plain dense state_dict.  With
  `--device cuda` (and CUDA present) every such layer is also converted by
  to_sparse_semi_structured on the GPU and checked against the dense matrix.
Both write `export.json` (what was exported, sizes, FLOPs, the output check).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

from utils.errors import ConfigError, UsageError

CHECK_BATCH = 4
ATOL, RTOL = 1e-4, 1e-4     # float32, different kernels: the sums run in another order


def file_of(weights: str) -> str:
    """The file of a weight set `PATH` or `PATH:ENTRY` (as analysis.weights reads it)."""
    head, sep, tail = weights.rpartition(":")
    return head if sep and tail.isidentifier() and os.path.isfile(head) else weights


def run_config_path(weights: str, config: str | None) -> str:
    """The config.yaml of the run a weight file belongs to (or `config`)."""
    import args_helper

    path = config or os.path.join(args_helper.run_dir_of(file_of(weights)), "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"no config.yaml for {weights} (looked for {path}); pass --config")
    return path


def load_run_model(weights: str, config: str | None = None, overrides=()):
    """(cfg, InputSpec, model in eval mode on the CPU) for a model file of a run."""
    import args_helper
    from analysis.weights import load_weight_set
    from models import InputSpec, build_model
    from utils.checkpoint import load_checkpoint

    path = file_of(weights)
    if not os.path.isfile(path):
        raise ConfigError(f"no such file: {path}")
    cfg = args_helper.resolve(["--config", run_config_path(weights, config), *overrides])
    blob = load_checkpoint(path)
    spec = blob.get("input") if isinstance(blob, dict) else None
    if spec is None:
        init = os.path.join(args_helper.run_dir_of(path), "checkpoints", "init.pt")
        if not os.path.isfile(init):
            raise ConfigError(f"{path} does not say its input size and the run has no "
                              f"checkpoints/init.pt")
        spec = load_checkpoint(init)["input"]
    spec = InputSpec(spec["num_classes"], spec["channels"], spec["image_size"])
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg, spec)
    try:
        model.load_state_dict(load_weight_set(weights))
    except RuntimeError as exc:
        raise ConfigError(f"{weights} does not fit arch {cfg.arch}: "
                          f"{str(exc).splitlines()[0][:160]}") from None
    return cfg, spec, model.eval()


def input_shape(spec) -> tuple:
    return (spec.channels, spec.image_size, spec.image_size)


def export_channels(model, spec, out: str, cfg, source: str) -> dict:
    """Write model_state.pt and model.pt2 of the physically smaller network; returns the
    export record (also written as export.json)."""
    from models.flops import count_flops, plain_flops
    from models.shrink import kept_channels, parameter_count, plain_copy
    from utils.checkpoint import save_checkpoint, write_json

    small = plain_copy(model, remove_channels=True).eval()
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn((CHECK_BATCH, *input_shape(spec)), generator=generator)
    with torch.no_grad():
        expected, got = model(batch), small(batch)
    difference = float((expected - got).abs().max())
    if not torch.allclose(got, expected, atol=ATOL, rtol=RTOL):
        raise RuntimeError(f"the smaller network's outputs differ from the masked network's "
                           f"by {difference:.3g}")
    channels = kept_channels(model)
    flops = count_flops(model, input_shape(spec))
    record = {"granularity": "channel", "source": source, "arch": cfg.arch,
              "input": dataclasses.asdict(spec),
              "channels": {name: {"kept": int(index.numel()),
                                  "of": int(dict(model.named_modules())[name].weight.shape[0])}
                           for name, index in channels.items()},
              "parameters_masked_network": parameter_count(model),
              "parameters_exported": parameter_count(small),
              "dense_flops": flops["dense_flops"], "ticket_flops": flops["flops"],
              "exported_flops": plain_flops(small, input_shape(spec)),
              "theoretical_speedup": flops["theoretical_speedup"],
              "max_output_difference": difference, "check_batch": CHECK_BATCH}
    os.makedirs(out, exist_ok=True)
    save_checkpoint({"state_dict": small.state_dict(), "arch": cfg.arch,
                     "input": dataclasses.asdict(spec),
                     "channels": {n: i.tolist() for n, i in channels.items()},
                     "config": cfg.yaml_values(), "record": record},
                    os.path.join(out, "model_state.pt"))
    record["program"] = _save_program(small, batch, out)
    write_json(os.path.join(out, "export.json"), record)
    return record


def _save_program(small, batch, out: str) -> str:
    """torch.export the smaller network with a dynamic batch size into out/model.pt2 (atomic
    rename); returns the file name."""
    from torch.export import Dim, export

    program = export(small, (batch,), dynamic_shapes=({0: Dim("batch", min=1, max=1 << 16)},))
    path = os.path.join(out, "model.pt2")
    tmp = os.path.join(out, ".model.tmp.pt2")
    torch.export.save(program, tmp)
    os.replace(tmp, path)
    return "model.pt2"


def export_nm(model, spec, out: str, cfg, source: str, device: str = "cpu") -> dict:
    """Write nm_weights.pt (packed n:m layers, CUTLASS semi-structured tensors where the
    kernels take them); returns the export record (also written as export.json)."""
    from models.flops import count_flops
    from models.layers import MASKED_LAYER_TYPES
    from models.nm_pack import gemm_matrix, pack_nm, semi_structured_cutlass, \
        semi_structured_problem
    from models.shrink import plain_copy
    from utils.checkpoint import save_checkpoint, write_json

    n, m = cfg.prune_n, cfg.prune_m
    check_cuda = device == "cuda"
    if check_cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine")
    layers, summary = {}, {}
    for name, layer in model.named_modules():
        if not isinstance(layer, MASKED_LAYER_TYPES):
            continue
        weight = layer.effective_weight().detach()
        try:
            values, positions = pack_nm(weight, layer.mask, n, m)
        except (ValueError, RuntimeError):
            summary[name] = {"n:m": False, "shape": list(weight.shape)}
            continue                         # a dense layer (ignored, or m does not divide)
        entry = {"shape": list(weight.shape), "values": values, "positions": positions}
        matrix = gemm_matrix(weight).to(torch.bfloat16)
        problem = semi_structured_problem(matrix)
        info = {"n:m": True, "shape": list(weight.shape), "gemm": list(matrix.shape),
                "semi_structured": problem is None}
        if problem is None:
            packed, meta = semi_structured_cutlass(matrix)
            entry["cutlass_packed"], entry["cutlass_meta"] = packed, meta
            if check_cuda:
                info["cuda_checked"] = _check_on_cuda(matrix)
        else:
            info["why_not_semi_structured"] = problem
        layers[name] = entry
        summary[name] = info
    if not layers:
        raise ConfigError(f"{source}: no layer of this ticket is {n}:{m}")
    flops = count_flops(model, input_shape(spec))
    record = {"granularity": f"{n}:{m}", "source": source, "arch": cfg.arch,
              "input": dataclasses.asdict(spec), "layers": summary,
              "dense_flops": flops["dense_flops"], "ticket_flops": flops["flops"],
              "theoretical_speedup": flops["theoretical_speedup"],
              "semi_structured_dtype": "bfloat16", "cuda_checked": check_cuda}
    os.makedirs(out, exist_ok=True)
    save_checkpoint({"n": n, "m": m, "layers": layers, "arch": cfg.arch,
                     "input": dataclasses.asdict(spec), "config": cfg.yaml_values(),
                     "state_dict": plain_copy(model).state_dict(), "record": record},
                    os.path.join(out, "nm_weights.pt"))
    write_json(os.path.join(out, "export.json"), record)
    return record


def _check_on_cuda(matrix: torch.Tensor) -> bool:
    """to_sparse_semi_structured of the matrix on the GPU gives back the same dense matrix."""
    from torch.sparse import to_sparse_semi_structured

    dense = matrix.cuda()
    sparse = to_sparse_semi_structured(dense)
    return bool(torch.equal(sparse.to_dense(), dense))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.export",
                                     description="Export a channel or n:m ticket.")
    parser.add_argument("weights", help="RUN/ticket.pt, RUN/checkpoints/final.pt, "
                        "level_XX.pt[:start]")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", help="the run's config.yaml (default: the run's own)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: also build and check the semi-structured tensors on the "
                        "GPU (n:m)")
    args = parser.parse_args(argv)
    try:
        cfg, spec, model = load_run_model(args.weights, args.config, ["--device", "cpu"])
        kind = cfg.prune_granularity
        if kind == "channel":
            record = export_channels(model, spec, args.out, cfg, args.weights)
            print(f"exported {cfg.arch} without its removed channels to {args.out}: "
                  f"{record['parameters_exported']:,} of "
                  f"{record['parameters_masked_network']:,} parameters, FLOPs "
                  f"{record['exported_flops']:,} of {record['dense_flops']:,} "
                  f"(speed-up {record['theoretical_speedup']:.2f}× in theory); outputs "
                  f"within {record['max_output_difference']:.2g} of the masked network")
        elif kind == "n:m":
            record = export_nm(model, spec, args.out, cfg, args.weights, args.device)
            packed = [n for n, i in record["layers"].items() if i["n:m"]]
            semi = [n for n in packed if record["layers"][n]["semi_structured"]]
            print(f"exported {len(packed)} {cfg.prune_n}:{cfg.prune_m} layers of {cfg.arch} to "
                  f"{args.out}/nm_weights.pt; 2:4 semi-structured form for {len(semi)}: "
                  f"{', '.join(semi) or 'none'}")
        else:
            raise ConfigError(f"{args.weights}: the run pruned single weights "
                              f"(prune_granularity weight); export needs a channel or n:m "
                              f"ticket")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: export failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
