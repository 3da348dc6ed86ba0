"""Does a training step replayed from a CUDA graph compute what the eager step computes?

    python bench/graph_check.py [--steps 40] [--device cuda]

For each step kind the project records — plain training (fp32 and bf16 autocast), Gem-Miner's
score search (quantised forward, regulariser, score clamping after every step), edge-popup's
top-k forward (global_ep), and gradual pruning's keep-pruned-weights-at-zero hook — two equal
ResNet-20s train on the same batches: one with the eager `utils.step.TrainStep`, one through
`utils.graphs.CapturedStep`.  It prints, per kind, the largest difference of the per-step
losses and of the final parameters, and whether the graph was really recorded.  Deterministic
cuDNN/cuBLAS algorithms are requested so the two runs choose the same kernels.

Exit status 1 if a kind was not captured or differs beyond its tolerance (fp32: 1e-5 relative
on losses; bf16: 1e-2).  On CPU there are no graphs: the script only runs the eager side
(a smoke test of the script itself).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # deterministic cuBLAS

import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _model(kind: str, device):
    import args_helper
    from models import InputSpec, build_model

    algo = {"gem_miner": "hc_iter", "edge_popup": "global_ep"}.get(kind, "training")
    cfg = args_helper.resolve(["--algo", algo, "--arch", "resnet20", "--dataset", "synthetic",
                               "--target-sparsity", "20", "--quiet"])
    torch.manual_seed(0)
    model = build_model(cfg, InputSpec(10, 3, 32), with_scores=algo != "training",
                        score_init="unif" if algo == "hc_iter" else "kaiming_uniform")
    return model.to(device)


def _setup(kind: str, model, device, capturable: bool):
    """(optimizer spec, extra_loss, hooks) of the step kind, on `model`."""
    from models.masks import apply_masks_to_weights, prunable_layers
    from pruners.search.gem_miner import regulariser
    from pruners.search.scores import (TopScoreSelector, clamp_scores_, quantized_score_fn,
                                       train_scores_only)
    from utils.schedules import OptimizerSpec
    from utils.step import InStepHooks

    if kind == "gem_miner":
        train_scores_only(model)
        for layer in prunable_layers(model).values():
            layer.score_fn = quantized_score_fn(0.5)
        return (OptimizerSpec("sgd", 0.9, 0.0),
                lambda m: 1e-4 * regulariser(m, "bin_entropy", capturable=capturable),
                InStepHooks(after_update=(lambda: clamp_scores_(model),)))
    if kind == "edge_popup":
        train_scores_only(model)
        total = sum(layer.weight.numel() for layer in prunable_layers(model).values())
        selector = TopScoreSelector(model, lambda active: min(total // 5, active))
        for name, layer in prunable_layers(model).items():
            layer.score_fn = selector.score_fn(name)
        return OptimizerSpec("sgd", 0.9, 5e-4), None, InStepHooks(
            before_forward=(selector.update,))
    if kind == "gradual":
        layers = prunable_layers(model)
        torch.manual_seed(2)
        with torch.no_grad():
            for layer in layers.values():
                layer.set_mask((torch.rand_like(layer.weight) < 0.5).float())
        return OptimizerSpec("sgd", 0.9, 5e-4), None, InStepHooks(
            after_update=(lambda: apply_masks_to_weights(layers),))
    return OptimizerSpec("sgd", 0.9, 5e-4), None, InStepHooks()


def check(kind: str, dtype, steps: int, device) -> dict:
    from utils.graphs import CapturedStep
    from utils.step import TrainStep

    graphs = device.type == "cuda"
    torch.manual_seed(1)
    batches = [(torch.randn(128, 3, 32, 32, device=device),
                torch.randint(0, 10, (128,), device=device)) for _ in range(steps)]
    results = {}
    base = _model(kind, device)
    for mode in ("eager", "graph"):
        model = copy.deepcopy(base)
        spec, extra, hooks = _setup(kind, model, device, capturable=True)
        optimizer = spec.build(model.parameters(), 0.05, capturable=graphs and mode == "graph")
        step = TrainStep(model, optimizer, device, None, dtype, 0.0, extra, hooks,
                         autocast_cache=not (graphs and mode == "graph"))
        runner = CapturedStep(step, warmup=2, report=print) if graphs and mode == "graph" \
            else step
        losses = []
        for images, labels in batches:
            step.reset_sums()
            runner(images, labels)
            losses.append(step.sums()[0].item() / labels.shape[0])
        captured = isinstance(runner, CapturedStep) and runner.graph is not None
        results[mode] = (losses, {n: p.detach().double().clone()
                                  for n, p in model.named_parameters()}, captured)
    (le, pe, _), (lg, pg, captured) = results["eager"], results["graph"]
    loss_diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(le, lg))
    param_diff = max(float((pe[n] - pg[n]).abs().max()) for n in pe)
    return {"captured": captured, "loss_rel": loss_diff, "param_abs": param_diff,
            "bitwise": loss_diff == 0 and param_diff == 0, "first_loss": le[0],
            "last_loss": le[-1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    print(f"graph check on {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                        if device.type == "cuda" else " (no graphs on CPU)")
          + f", torch {torch.__version__}, {args.steps} steps of ResNet-20 at batch 128")
    print(f"{'kind':<22} {'captured':>8} {'max rel Δloss':>14} {'max |Δparam|':>13} "
          f"{'bitwise':>8} {'loss first→last':>18}  verdict")
    failed = False
    for kind, dtype, tolerance in (("training fp32", None, 1e-5),
                                   ("training bf16", torch.bfloat16, 1e-2),
                                   ("gem_miner fp32", None, 1e-5),
                                   ("edge_popup fp32", None, 1e-5),
                                   ("gradual fp32", None, 1e-5)):
        r = check(kind.split()[0], dtype, args.steps, device)
        ok = r["loss_rel"] <= tolerance and (r["captured"] or device.type != "cuda")
        failed |= not ok
        print(f"{kind:<22} {str(r['captured']):>8} {r['loss_rel']:14.3g} "
              f"{r['param_abs']:13.3g} {str(r['bitwise']):>8} "
              f"{r['first_loss']:8.4f}→{r['last_loss']:<8.4f}  {'ok' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
