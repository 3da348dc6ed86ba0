"""Shared plumbing of the analysis commands: a run's config → model, data and loaders."""
from __future__ import annotations

import argparse
import sys

from utils.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def parser_for(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with --config; options it does not know are passed on as config overrides
    (e.g. --data DIR, --device cpu)."""
    parser = _Parser(prog=prog, description=description + " Other --options override the "
                     "run's config (e.g. --data DIR, --device cpu).")
    parser.add_argument("--config", required=True, help="the run's config.yaml")
    return parser


def run_cli(parser: argparse.ArgumentParser, work, argv: list[str] | None) -> int:
    """Parse, run `work(args)`; a usage error prints one line and returns 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, overrides = parser.parse_known_args(argv)
        args.overrides = overrides
        return work(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class AnalysisSession:
    """The config of a run with its dataset, loaders (on the config's device) and a way to
    build the model with any saved weight set."""

    def __init__(self, config_path: str, overrides: list[str] = ()):
        import torch

        import args_helper
        import data
        from models import InputSpec
        from utils.device import autocast_dtype, select_device

        self.cfg = args_helper.resolve(["--config", config_path, *overrides])
        self.device = select_device(self.cfg)
        self.autocast = autocast_dtype(self.cfg, self.device)
        self.splits = data.load_splits(self.cfg)
        self.spec = InputSpec(self.splits.num_classes, self.splits.channels,
                              self.splits.image_size)
        torch.manual_seed(self.cfg.run_seed)
        self.loaders = data.make_loaders(self.splits, self.cfg.batch_size, self.device,
                                         self.cfg.run_seed)

    def model_with(self, weights: str):
        """The config's architecture holding the weights of file `weights` (PATH[:ENTRY])."""
        from analysis.weights import load_weight_set
        from models import build_model
        from utils.errors import ConfigError

        model = build_model(self.cfg, self.spec)
        state = load_weight_set(weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"{weights} does not fit arch {self.cfg.arch}: "
                              f"{str(exc).splitlines()[0][:160]}") from None
        return model.to(self.device)
