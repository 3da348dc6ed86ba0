"""A 2-D slice of the error landscape through three weight sets (the plane they span), as
in Figure 3 of "Unmasking the LTH": typically w(L), its pruning projection m(L+1)⊙w(L) and
w(L+1).

The plane is parametrised by an orthonormal basis (Gram–Schmidt on w2 − w1 and w3 − w1), so
the axes are distances in weight space; the grid extends `margin` of the points' spread beyond
them.  Every grid point is evaluated after re-estimating BatchNorm statistics.

    python -m analysis.landscape W1 W2 W3 --config RUN/config.yaml [--grid 11]
"""
from __future__ import annotations

import copy
import os


from analysis.batchnorm import reestimate_batchnorm
from analysis.weights import effective_state
from utils.train import evaluate


def _float_keys(state: dict) -> list[str]:
    return [k for k, v in state.items() if v.is_floating_point()]


def _dot(a: dict, b: dict, keys) -> float:
    return float(sum((a[k].double() * b[k].double()).sum() for k in keys))


def error_slice(model, states: list[dict], loaders, *, grid: int = 11, margin: float = 0.25,
                bn_reset_batches: int = 20, autocast_dtype=None, progress=None) -> dict:
    """Test error on a grid×grid lattice of the plane through three weight sets
    (`progress()`, optional, is called after each grid point).

    Returns {"xs", "ys", "test_error" (rows over ys), "points": [(x, y)] of the three sets}.
    """
    w1, w2, w3 = (effective_state(s) for s in states)
    keys = _float_keys(w1)
    d2 = {k: w2[k] - w1[k] for k in keys}
    d3 = {k: w3[k] - w1[k] for k in keys}
    n2 = _dot(d2, d2, keys) ** 0.5
    if n2 == 0:
        raise ValueError("the first two weight sets are identical; no plane to slice")
    e1 = {k: d2[k] / n2 for k in keys}
    along = _dot(d3, e1, keys)
    rest = {k: d3[k] - along * e1[k] for k in keys}
    n3 = _dot(rest, rest, keys) ** 0.5
    if n3 == 0:
        raise ValueError("the three weight sets lie on one line; no plane to slice")
    e2 = {k: rest[k] / n3 for k in keys}
    points = [(0.0, 0.0), (n2, 0.0), (along, n3)]
    lo_x, hi_x = min(p[0] for p in points), max(p[0] for p in points)
    lo_y, hi_y = min(p[1] for p in points), max(p[1] for p in points)
    span_x, span_y = hi_x - lo_x, hi_y - lo_y
    xs = [lo_x - margin * span_x + i * (1 + 2 * margin) * span_x / (grid - 1)
          for i in range(grid)]
    ys = [lo_y - margin * span_y + i * (1 + 2 * margin) * span_y / (grid - 1)
          for i in range(grid)]
    probe = copy.deepcopy(model)
    base = {k: v.clone() for k, v in w1.items()}
    errors = []
    for y in ys:
        row = []
        for x in xs:
            state = dict(base)
            for k in keys:
                state[k] = w1[k] + x * e1[k] + y * e2[k]
            probe.load_state_dict(state)
            reestimate_batchnorm(probe, loaders.train, bn_reset_batches)
            row.append(100.0 - evaluate(probe, loaders.test, autocast_dtype)["acc"])
            if progress is not None:
                progress()
        errors.append(row)
    return {"xs": xs, "ys": ys, "test_error": errors, "points": points}


def save_slice(result: dict, labels: list[str], prefix: str, title: str) -> None:
    """<prefix>.csv (x, y, test_error) and <prefix>.png (contour plot)."""
    from analysis.plots import plot_slice
    from utils.logging import write_csv

    rows = [{"x": x, "y": y, "test_error": result["test_error"][j][i]}
            for j, y in enumerate(result["ys"]) for i, x in enumerate(result["xs"])]
    write_csv(prefix + ".csv", ["x", "y", "test_error"], rows)
    plot_slice(result["xs"], result["ys"], result["test_error"],
               dict(zip(labels, result["points"])), prefix + ".png", title)


def main(argv: list[str] | None = None) -> int:
    from analysis.cli import AnalysisSession, parser_for, run_cli

    parser = parser_for("python -m analysis.landscape",
                        "Test-error slice through the plane of three weight sets.")
    for name in ("w1", "w2", "w3"):
        parser.add_argument(name, help="model file (PATH[:ENTRY])")
    parser.add_argument("--grid", type=int, default=11)
    parser.add_argument("--out", default=None, help="output prefix (default: next to W1)")

    def work(args) -> int:
        from analysis.weights import load_weight_set

        session = AnalysisSession(args.config, args.overrides)
        model = session.model_with(args.w1)
        specs = [args.w1, args.w2, args.w3]
        result = error_slice(model, [load_weight_set(s) for s in specs], session.loaders,
                             grid=args.grid, bn_reset_batches=session.cfg.bn_reset_batches,
                             autocast_dtype=session.autocast)
        labels = [os.path.basename(s) for s in specs]
        prefix = args.out or os.path.join(os.path.dirname(os.path.abspath(
            args.w1.split(":")[0])), "slice")
        save_slice(result, labels, prefix, "test error slice")
        print(f"written: {prefix}.csv, {prefix}.png")
        return 0

    return run_cli(parser, work, argv)


if __name__ == "__main__":
    raise SystemExit(main())
