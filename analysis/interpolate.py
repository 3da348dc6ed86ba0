"""Error barrier between two weight sets of a run, as a command:

    python -m analysis.interpolate A.pt B.pt --config RUN/config.yaml [--points 21]

writes <out>.csv (γ, train/test error and loss) and <out>.png, and prints the barrier.
A and B are model files (final.pt, init.pt, checkpoints/level_XX.pt[:start], ticket.pt).
"""
from __future__ import annotations

import os


def main(argv: list[str] | None = None) -> int:
    from analysis.cli import AnalysisSession, parser_for, run_cli

    parser = parser_for("python -m analysis.interpolate",
                        "Linear interpolation and error barrier between two weight sets.")
    parser.add_argument("a", help="weights A (γ = 1)")
    parser.add_argument("b", help="weights B (γ = 0)")
    parser.add_argument("--points", type=int, default=11)
    parser.add_argument("--bn-reset-batches", type=int, default=None,
                        help="BatchNorm re-estimation batches (default: the config's)")
    parser.add_argument("--out", default=None, help="output prefix (default: next to A)")

    def work(args) -> int:
        from analysis.interpolation import interpolate
        from analysis.plots import plot_curve
        from analysis.weights import load_weight_set
        from utils.logging import write_csv

        session = AnalysisSession(args.config, args.overrides)
        model = session.model_with(args.a)
        batches = session.cfg.bn_reset_batches if args.bn_reset_batches is None \
            else args.bn_reset_batches
        curve = interpolate(model, load_weight_set(args.a), load_weight_set(args.b),
                            session.loaders, points=args.points, bn_reset_batches=batches,
                            autocast_dtype=session.autocast)
        name_a = os.path.splitext(os.path.basename(args.a.split(":")[0]))[0]
        name_b = os.path.splitext(os.path.basename(args.b.split(":")[0]))[0]
        prefix = args.out or os.path.join(os.path.dirname(os.path.abspath(
            args.a.split(":")[0])), f"interp_{name_a}_{name_b}")
        write_csv(prefix + ".csv", ["gamma", "train_error", "test_error", "train_loss",
                                    "test_loss"], curve.rows())
        plot_curve(curve, prefix + ".png", f"{name_a} ↔ {name_b}", name_a, name_b)
        print(f"test error barrier {curve.test_barrier:.3f} points, train error barrier "
              f"{curve.train_barrier:.3f} points ({args.points} points)")
        print(f"written: {prefix}.csv, {prefix}.png")
        return 0

    return run_cli(parser, work, argv)


if __name__ == "__main__":
    raise SystemExit(main())
