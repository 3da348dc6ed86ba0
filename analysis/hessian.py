"""Hessian of the training loss at a solution, restricted to the unpruned coordinates.

The operator is v ↦ P H P v, where H is the Hessian of the mean cross-entropy over a fixed set
of `hessian_batches` training batches (in order, no augmentation, BatchNorm in eval mode,
fp32) with respect to the prunable weights, and P zeroes the pruned coordinates.  Only
Hessian-vector products are formed (double backpropagation), never H itself.

Top-k eigenvalues: power iteration with deflation (each vector kept orthogonal to the ones
already found), so they are the k eigenvalues of largest magnitude — at a trained solution
these are the largest curvatures.  Trace: Hutchinson's estimator with Rademacher vectors.
Both are deterministic for a given seed.

    python -m analysis.hessian CKPT --config RUN/config.yaml [--topk 5] [--trace]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.masks import prunable_layers


def _dot(a: list, b: list) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _scale(a: list, c) -> list:
    return [x * c for x in a]


def _axpy(a: list, c, b: list) -> list:
    """a + c·b"""
    return [x + c * y for x, y in zip(a, b)]


class HessianOperator:
    """Hessian-vector products of the training loss w.r.t. the masked layers' weights."""

    def __init__(self, model: torch.nn.Module, loader, batches: int):
        self.model = model
        layers = list(prunable_layers(model).values())
        self.params = [layer.weight for layer in layers]
        self.masks = [layer.mask.detach() for layer in layers]
        self.data = []
        for index, batch in enumerate(loader):
            if index >= batches:
                break
            self.data.append(batch)
        self.count = sum(len(y) for _, y in self.data)

    def _with_grad(self):
        flags = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(True)
        return flags

    def _restore(self, flags) -> None:
        for p, flag in zip(self.params, flags):
            p.requires_grad_(flag)

    def loss(self) -> float:
        """Mean cross-entropy over the operator's batches."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            total = sum(float(F.cross_entropy(self.model(x).float(), y, reduction="sum"))
                        for x, y in self.data)
        self.model.train(was_training)
        return total / self.count

    def hvp(self, vector: list) -> list:
        """P H P v."""
        was_training = self.model.training
        self.model.eval()
        flags = self._with_grad()
        vector = [v * m for v, m in zip(vector, self.masks)]
        out = [torch.zeros_like(p) for p in self.params]
        try:
            for images, labels in self.data:
                loss = F.cross_entropy(self.model(images).float(), labels,
                                       reduction="sum") / self.count
                grads = torch.autograd.grad(loss, self.params, create_graph=True)
                hv = torch.autograd.grad(_dot(grads, vector), self.params)
                out = [o + h.detach() for o, h in zip(out, hv)]
        finally:
            self._restore(flags)
            self.model.train(was_training)
        return [o * m for o, m in zip(out, self.masks)]

    def random_vector(self, generator: torch.Generator, rademacher: bool = False) -> list:
        """A random vector on the unpruned coordinates (Gaussian or ±1)."""
        out = []
        for p, m in zip(self.params, self.masks):
            if rademacher:
                v = torch.randint(0, 2, p.shape, generator=generator).float() * 2 - 1
            else:
                v = torch.randn(p.shape, generator=generator)
            out.append(v.to(p.device, p.dtype) * m)
        return out


def top_eigenvalues(op, k: int, iters: int = 100, tol: float = 1e-4,
                    seed: int = 0) -> tuple[list[float], list[list]]:
    """The k eigenvalues of largest magnitude of `op` (anything with hvp() and
    random_vector()) by power iteration with deflation; returns (values, vectors)."""
    generator = torch.Generator().manual_seed(seed)
    values: list[float] = []
    vectors: list[list] = []

    def orthogonalise(v: list) -> list:
        for u in vectors:
            v = _axpy(v, -_dot(v, u), u)
        return v

    for _ in range(k):
        v = orthogonalise(op.random_vector(generator))
        v = _scale(v, 1.0 / float(_dot(v, v)) ** 0.5)
        value = 0.0
        for step in range(iters):
            hv = orthogonalise(op.hvp(v))
            new_value = float(_dot(v, hv))
            norm = float(_dot(hv, hv)) ** 0.5
            if norm == 0.0:
                value = 0.0
                break
            v = _scale(hv, 1.0 / norm)
            converged = step > 0 and abs(new_value - value) <= tol * max(abs(new_value), 1e-12)
            value = new_value
            if converged:
                break
        values.append(value)
        vectors.append(v)
    return values, vectors


def hutchinson_trace(op, samples: int = 50, seed: int = 0) -> float:
    """E[vᵀ H v] over Rademacher vectors v on the unpruned coordinates."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(samples):
        v = op.random_vector(generator, rademacher=True)
        total += float(_dot(v, op.hvp(v)))
    return total / samples


def hessian_summary(model, loader, *, batches: int, topk: int, trace: bool, seed: int,
                    iters: int = 100, samples: int = 50, progress=None) -> dict:
    """{"hessian_top": [λ1..λk], "hessian_trace": t or None, "train_loss": L} at `model`
    (`progress()`, optional, is called after each Hessian-vector product: at most
    topk × iters + samples of them)."""
    op = HessianOperator(model, loader, batches)
    if progress is not None:
        product = op.hvp

        def counted(vector: list) -> list:
            out = product(vector)
            progress()
            return out
        op.hvp = counted
    values = top_eigenvalues(op, topk, iters=iters, seed=seed)[0] if topk else []
    return {"hessian_top": values,
            "hessian_trace": hutchinson_trace(op, samples, seed) if trace else None,
            "hessian_loss": op.loss()}


def main(argv: list[str] | None = None) -> int:
    import json
    import os

    from analysis.cli import AnalysisSession, parser_for, run_cli

    parser = parser_for("python -m analysis.hessian",
                        "Top eigenvalues and trace of the training-loss Hessian at CKPT.")
    parser.add_argument("checkpoint", help="model file (final.pt, level_XX.pt[:start], ...)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--batches", type=int, default=None,
                        help="training batches (default: hessian_batches of the config)")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--out", default=None, help="JSON file (default: next to CKPT)")

    def work(args) -> int:
        session = AnalysisSession(args.config, args.overrides)
        model = session.model_with(args.checkpoint)
        batches = args.batches or session.cfg.hessian_batches
        result = hessian_summary(model, session.loaders.train_eval, batches=batches,
                                 topk=args.topk, trace=args.trace, seed=session.cfg.run_seed,
                                 iters=args.iters, samples=args.samples)
        out = args.out or os.path.splitext(args.checkpoint.split(":")[0])[0] + "_hessian.json"
        from utils.checkpoint import write_json
        write_json(out, result)
        print(json.dumps(result, indent=2))
        print(f"written: {out}")
        return 0

    return run_cli(parser, work, argv)


if __name__ == "__main__":
    raise SystemExit(main())
