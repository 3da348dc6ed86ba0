"""The option schema, declared once, and config resolution (YAML + command line + defaults).

Every option is one `Option` in OPTIONS.  From that list come the command-line flags
(`--fine-tune-lr` and `--fine_tune_lr`), YAML validation, `--help`, the README option table
(`python args_helper.py --markdown`) and the run hash.  Nothing here parses `sys.argv` on
import: call `resolve(argv)`.

Precedence: explicit command-line flag > YAML value > built-in default.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from data import registry as data_registry
from models import registry as model_registry
from pruners import registry as algo_registry
from pruners import granularity_checks, target_checks, upstream_checks
from pruners.search import checks as search_checks
from utils.errors import ConfigError

IMPLEMENTED, LATER, LEGACY, UNSUPPORTED = "implemented", "later", "legacy", "unsupported"
IGNORED = (LEGACY, UNSUPPORTED)   # statuses whose keys never reach the resolved config

# Option kinds: how a value is parsed and checked.
BOOL, INT, FLOAT, STR, INT_LIST, STR_LIST = "bool", "int", "float", "str", "int_list", "str_list"
ITERS = "iters"   # an iteration count, or "<N>ep" (epochs) / "<N>it" (iterations)
LIST_KINDS = (INT_LIST, STR_LIST)
# upper bounds of absurd values (a typo such as 1e15 epochs would run for ever); every
# integer must also fit in 64 bits
MAX_SEED = 2 ** 32 - 1      # numpy's seed range; seed × trial_num stays far below 2**63
MAX_EPOCHS = 100_000
MAX_INT = 2 ** 63 - 1


@dataclass(frozen=True)
class Option:
    """One configurable option: its type, default, allowed values, help and role."""

    name: str
    kind: str
    default: Any
    help: str
    group: str
    choices: tuple = ()
    low: float | None = None          # lower bound (inclusive unless low_open)
    high: float | None = None         # upper bound (inclusive unless high_open)
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    science: bool = True              # part of the run hash
    status: str = IMPLEMENTED         # implemented | later | legacy (no effect) | unsupported
    algos: tuple = ()                 # algorithms the option matters for; () = all
    yaml: bool = True                 # False: a command-line flag only (--dry-run, --force, ...)
    planned: str = ""                 # for status=later: where it will be implemented
    unset_values: tuple = ()          # upstream spellings of "unset" (→ null), e.g. -1
    extends_algos: tuple = ()         # for these algorithms a new value extends a run (more
                                      # levels, more controls) instead of defining a new one
    refused: tuple = ()               # (value, reason) pairs: upstream names refused with a
                                      # reason instead of "must be one of"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def bounds_text(self) -> str:
        lo = "" if self.low is None else ("(" if self.low_open else "[") + _fmt(self.low)
        hi = "" if self.high is None else _fmt(self.high) + (")" if self.high_open else "]")
        if self.low is not None and self.high is not None:
            return f"{lo}, {hi}"
        if self.low is not None:
            return (">" if self.low_open else ">=") + " " + _fmt(self.low)
        if self.high is not None:
            return ("<" if self.high_open else "<=") + " " + _fmt(self.high)
        return ""


def _fmt(x) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


G_EXP, G_DATA, G_MODEL, G_OPT, G_HW, G_RUN = (
    "Experiment", "Data", "Model", "Optimisation", "Hardware and precision", "Run control")
G_SEARCH, G_FT, G_IMP = ("Pruning and score search", "Fine-tuning and sanity checks", "IMP")
G_ANALYSIS = "Analysis (IMP runs)"
G_ATINIT = "Pruning at initialisation, gradual, early-bird"
G_LEGACY = "Legacy upstream keys (accepted, no effect)"
G_UNSUPPORTED = "Upstream keys not supported here (accepted only at their upstream default)"

_A = algo_registry
# grad_flow: IMP per level (pruners/imp/analysis.py); the searches, their random baselines and
# pruning at init at their starting points (pruners/start_grad_flow.py)
_GRAD_FLOW_ALGOS = _A.IMP_ALGOS + _A.FINETUNE_ALGOS + _A.AT_INIT_ALGOS
_LEGACY_HELP = "legacy upstream key; accepted so upstream files load, has no effect"


def _legacy(name: str, kind: str = STR) -> Option:
    return Option(name, kind, None, _LEGACY_HELP, G_LEGACY, nullable=True, science=False,
                  status=LEGACY)


def _unsupported(name: str, default, what: str) -> Option:
    return Option(name, STR, default, what, G_UNSUPPORTED, nullable=True, science=False,
                  status=UNSUPPORTED)


OPTIONS: tuple[Option, ...] = (
    # ----------------------------------------------------------------- experiment
    Option("config", STR, None, "YAML config file to run", G_EXP, nullable=True,
           science=False, yaml=False),
    Option("algo", STR, "ep", "algorithm to run (upstream default: ep)", G_EXP,
           choices=_A.ALGO_CHOICES,
           refused=(("pt_sr", "is not an algorithm of upstream's main.py (its score layers "
                              "stop with 'INVALID PRUNING ALGO' for it)"),)),
    Option("weight_training", BOOL, False,
           "train the weights of the dense network (upstream flag; same as algo: training)",
           G_EXP),
    Option("seed", INT, 42, "random seed; the run uses seed × trial_num (upstream rule)", G_EXP,
           low=0, high=MAX_SEED),
    Option("trial_num", INT, 1, "trial number (1, 2, ...); multiplies the seed", G_EXP, low=0,
           high=1_000_000),
    Option("replicates", INT, 1,
           "train M independent copies packed into one program (copy k: seed + k, its own "
           "run directory and summary, as if run alone); algos training, imp*, snip, grasp, "
           "synflow, magnitude_init, random", G_EXP,
           low=1, high=256, science=False),
    Option("name", STR, None, "run name (default: the config file's stem)", G_EXP,
           nullable=True, science=False),
    Option("subfolder", STR, None, "sub-folder of log_dir that holds the run directory",
           G_EXP, nullable=True, science=False),
    Option("log_dir", STR, "runs", "where run directories are created", G_EXP, science=False),
    # ----------------------------------------------------------------- data
    Option("dataset", STR, "CIFAR10", "dataset (upstream default: MNIST)", G_DATA,
           choices=tuple([*data_registry.DATASETS, *data_registry.PLANNED]),
           refused=tuple(data_registry.OUT_OF_SCOPE.items())),
    Option("data", STR, "data/datasets", "root folder of the dataset files", G_DATA,
           science=False),
    Option("download", BOOL, True,
           "download missing CIFAR/MNIST files when online (into `data`)", G_DATA,
           science=False),
    Option("use_full_data", BOOL, False,
           "train on the whole training set (no validation split; val metrics are empty)",
           G_DATA),
    Option("val_size", INT, None,
           "images held out of the training set for validation (default: 5000 for "
           "CIFAR/MNIST, 10% for digits and synthetic, 10000 for ImageNet; TinyImageNet "
           "validates on half of its official val set instead)", G_DATA,
           nullable=True, low=0, high=10_000_000),
    Option("split_seed", INT, 0, "seed of the train/validation split (fixed across runs)",
           G_DATA, low=0, high=MAX_SEED),
    Option("synthetic_size", INT, 5000,
           "number of training images of the `synthetic` dataset (test set: a fifth of it)",
           G_DATA, low=20, high=1_000_000),
    Option("batch_size", INT, 64, "training batch size (under torchrun: per process, unless "
           "batch_size_is_global)", G_DATA, low=1, high=1_000_000),
    Option("workers", INT, 4, "data-loading worker processes (TinyImageNet, ImageNet; "
           "decoding threads for FfcvImageNet)", G_DATA,
           low=0, high=1024, science=False),
    Option("num_workers", INT, 4, "alias of workers (upstream spelled it both ways)", G_DATA,
           low=0, high=1024, science=False),
    # ----------------------------------------------------------------- model
    Option("arch", STR, "resnet20", "architecture (upstream default: TwoLayerFC)", G_MODEL,
           choices=tuple([*model_registry.ARCHITECTURES, *model_registry.PLANNED]),
           refused=tuple(model_registry.UPSTREAM_UNBUILDABLE.items())),
    Option("bn_type", STR, "AffineBatchNorm",
           "BatchNorm with (Affine) or without (NonAffine) learnable scale and shift", G_MODEL,
           choices=("NonAffineBatchNorm", "AffineBatchNorm"), nullable=True),
    Option("conv_type", STR, "SubnetConv",
           "upstream layer type; every layer here is a masked layer, so this is informational",
           G_MODEL, choices=("SubnetConv", "DenseConv"), nullable=True),
    Option("bias", BOOL, False, "give convolutions and linear layers a bias", G_MODEL),
    Option("init", STR, "kaiming_normal", "weight initialisation", G_MODEL,
           choices=("signed_constant", "unsigned_constant", "kaiming_normal",
                    "kaiming_uniform", "xavier_normal", "xavier_constant", "standard")),
    Option("mode", STR, "fan_in", "fan used by the initialisation", G_MODEL,
           choices=("fan_in", "fan_out")),
    Option("nonlinearity", STR, "relu", "nonlinearity whose gain the initialisation uses",
           G_MODEL, choices=("relu", "leaky_relu", "linear", "tanh", "sigmoid")),
    Option("scale_fan", BOOL, False,
           "scale the fan by (1 - prune_rate) at build time (prune_rate 0.5 when unset)",
           G_MODEL),
    Option("score_init", STR, "unif",
           "initial scores of hc / hc_iter (edge-popup always uses kaiming_uniform, as "
           "upstream)", G_MODEL,
           choices=("unif", "half", "bern", "bimodal", "skew", "all_one", "kaiming_uniform"),
           algos=_A.HC_ALGOS),
    Option("fixed_init", BOOL, False,
           "build the model under seed_fixed_init so every trial shares weights and scores",
           G_MODEL),
    Option("seed_fixed_init", INT, 24, "seed used when fixed_init is set", G_MODEL, low=0,
           high=MAX_SEED),
    Option("pretrained", STR, None,
           "checkpoint or state_dict (.pt) whose weights are loaded before the run", G_MODEL,
           nullable=True),
    # ----------------------------------------------------------------- optimisation
    Option("epochs", INT, 10, "training epochs (IMP: levels = epochs // iter_period when "
           "neither imp_rounds nor target_sparsity is set, as upstream)", G_OPT, low=1,
           high=MAX_EPOCHS, extends_algos=_A.IMP_ALGOS),
    Option("optimizer", STR, "sgd", "optimizer (adamw: decoupled weight decay)", G_OPT,
           choices=("sgd", "adam", "adamw")),
    Option("lr", FLOAT, 0.001, "learning rate", G_OPT, low=0),
    Option("lr_policy", STR, "constant_lr", "learning-rate schedule (per epoch)", G_OPT,
           choices=("constant_lr", "cosine_lr", "multistep_lr"), nullable=True),
    Option("lr_gamma", FLOAT, 0.1, "factor applied at each multistep milestone", G_OPT,
           low=0, low_open=True),
    Option("milestones", INT_LIST, None,
           "multistep milestones in epochs (default from epochs: 100→50,80; 150/160→80,120; "
           "200→100,150; 300→150,250; else E/2, 2E/3)", G_OPT, nullable=True),
    Option("warmup_length", INT, 0, "epochs of linear learning-rate warm-up", G_OPT, low=0,
           high=MAX_EPOCHS),
    Option("momentum", FLOAT, 0.9, "SGD momentum", G_OPT, low=0, high=1, high_open=True),
    Option("nesterov", BOOL, False, "Nesterov momentum", G_OPT),
    Option("wd", FLOAT, 0.0005, "weight decay", G_OPT, low=0),
    Option("label_smoothing", FLOAT, 0.0, "label smoothing of the cross-entropy loss", G_OPT,
           low=0, high=1, high_open=True, nullable=True),
    # ----------------------------------------------------------------- score search (issue 4)
    Option("freeze_weights", BOOL, True,
           "keep weights (and BatchNorm parameters) at their init during score search",
           G_SEARCH, algos=_A.SCORE_ALGOS),
    Option("prune_type", STR, "FixThresholding",
           "hc_iter flag pruning: BottomK (global, geometric schedule to target_sparsity), "
           "LocalBottomK (the same per layer), FixThresholding (clear flags with score <= "
           "quantize_threshold)", G_SEARCH,
           choices=("BottomK", "LocalBottomK", "FixThresholding"), algos=("hc_iter",)),
    Option("prune_rate", FLOAT, None,
           "IMP: fraction of the remaining weights removed per level (0.2 when unset); "
           "ep (with override_prune_rate): fraction of each layer kept; global_ep: fraction "
           "removed; global_ep_iter: fraction removed per step; random_subnet: density",
           G_SEARCH, low=0, high=1, nullable=True,
           unset_values=(-1, -1.0), algos=_A.EP_ALGOS + _A.IMP_ALGOS + ("random_subnet",)),
    Option("prune_scope", STR, "global",
           "global: rank weights over all pruned layers; local: the same fraction per layer",
           G_SEARCH, choices=("global", "local"), algos=_A.IMP_ALGOS + _A.TARGET_ALGOS),
    Option("prune_ignore", STR_LIST, None,
           "prunable layers kept dense, by module name (e.g. conv1 fc)", G_SEARCH,
           nullable=True, algos=_A.IMP_ALGOS + _A.TARGET_ALGOS),
    Option("prune_bias", BOOL, False,
           "also prune biases (same fraction, by magnitude, as upstream did with bias: true)",
           G_SEARCH, algos=_A.IMP_ALGOS),
    Option("prune_granularity", STR, "weight",
           "what magnitude-style pruning removes: weight (single weights); channel (whole "
           "output channels — conv filters, linear rows — ranked by their L1 norm or summed "
           "score, with the inputs that read them; target_sparsity and prune_rate then count "
           "channels); n:m (exactly prune_n of every prune_m consecutive weights along the "
           "input dimension)", G_SEARCH, choices=("weight", "channel", "n:m"),
           algos=_A.GRANULARITY_ALGOS),
    Option("prune_n", INT, 2, "n:m granularity: weights kept in every group of prune_m",
           G_SEARCH, low=1, algos=_A.GRANULARITY_ALGOS),
    Option("prune_m", INT, 4,
           "n:m granularity: group size (consecutive weights along the input dimension; "
           "layers whose input dimension it does not divide stay dense)", G_SEARCH, low=2,
           algos=_A.GRANULARITY_ALGOS),
    Option("override_prune_rate", BOOL, False,
           "edge-popup: use prune_rate (else the run keeps target_sparsity % of the weights)",
           G_SEARCH, algos=_A.EP_ALGOS),
    Option("target_sparsity", FLOAT, None,
           "target DENSITY in % (upstream name): 1.44 keeps 1.44 % of the weights "
           "(hc_iter/ep family: 0.5 when unset, as upstream; IMP: prune until reached; "
           "pruning at init, gradual, early_bird: required)",
           G_SEARCH, low=0, high=100, low_open=True, nullable=True,
           algos=("hc_iter",) + _A.EP_ALGOS + _A.IMP_ALGOS + _A.TARGET_ALGOS,
           extends_algos=_A.IMP_ALGOS),
    Option("iter_period", INT, 5,
           "epochs between pruning steps (hc_iter, global_ep_iter: after 0-based epochs "
           "iter_period, 2·iter_period, ...; IMP: round length)", G_SEARCH, low=1,
           high=MAX_EPOCHS, algos=("hc_iter", "global_ep_iter") + _A.IMP_ALGOS),
    Option("hc_quantized", BOOL, False,
           "hc / hc_iter forward mask 1[score > quantize_threshold] with a straight-through "
           "gradient (else the continuous weight·score)", G_SEARCH, algos=_A.HC_ALGOS),
    Option("quantize_threshold", FLOAT, 0.5, "score threshold of the quantised and rounded mask",
           G_SEARCH, low=0, high=1, algos=_A.HC_ALGOS),
    Option("round", STR, "naive",
           "rounding of scores to a mask for evaluation and fine-tuning: naive "
           "1[s > quantize_threshold], prob Bernoulli(s), all_ones (mask = flags)", G_SEARCH,
           choices=("naive", "prob", "all_ones"), algos=_A.HC_ALGOS,
           refused=(("majority", "is not a rounding of upstream's round_model (it printed "
                                 "'INVALID ROUNDING' and left the scores unrounded, then "
                                 "failed measuring the sparsity)"),)),
    Option("noise", BOOL, False, "add Gaussian noise (std noise_ratio) to scores before rounding",
           G_SEARCH, algos=_A.HC_ALGOS),
    Option("noise_ratio", FLOAT, 0.0, "standard deviation of the rounding noise", G_SEARCH,
           low=0, high=1, algos=_A.HC_ALGOS),
    Option("regularization", STR, None,
           "score regulariser over all scores: L2 Σs², L1 Σ|s|, L1_L2 both, var_red_1 "
           "Σs^alpha(1−s)^alpha_prime, var_red_2 Σw²s(1−s), bin_entropy", G_SEARCH,
           choices=("L2", "L1", "L1_L2", "var_red_1", "var_red_2", "bin_entropy"),
           nullable=True, unset_values=(False,), algos=_A.HC_ALGOS),
    Option("lmbda", FLOAT, 0.001, "regulariser weight", G_SEARCH, low=0, algos=_A.HC_ALGOS),
    Option("alpha", FLOAT, 1.0, "first exponent of var_red_1", G_SEARCH, algos=_A.HC_ALGOS),
    Option("alpha_prime", FLOAT, 1.0, "second exponent of var_red_1", G_SEARCH,
           algos=_A.HC_ALGOS),
    Option("random_subnet", BOOL, False,
           "baseline: random mask at density prune_rate (Bernoulli), or Smart-Ratio with "
           "smart_ratio; then fine-tuning", G_SEARCH),
    Option("smart_ratio", FLOAT, -1.0,
           "baseline (with random_subnet): Smart-Ratio layer densities, fraction pruned "
           "(0.9856 keeps 1.44 %); -1: off", G_SEARCH, algos=("smart_ratio",)),
    Option("sr_version", INT, 1,
           "Smart-Ratio variant: 1 standard; 2 ResNet-20 with Gem-Miner's first and last "
           "layer densities (smart_ratio 0.9856 or 0.9628)", G_SEARCH, low=1, high=2,
           algos=("smart_ratio",)),
    Option("checkpoint_at_prune", BOOL, False,
           "save checkpoints/prune_XX.pt (flags, scores, weights) after every pruning step",
           G_SEARCH, algos=("hc_iter", "global_ep_iter")),
    Option("ckpt_at_fixed_epochs", INT_LIST, None,
           "save checkpoints/after_epoch_XXX.pt after these epochs of training / search "
           "(upstream's 0-based epoch numbers: 1 saves the model after the 2nd epoch, file "
           "after_epoch_002.pt)", G_SEARCH, nullable=True, science=False,
           algos=("training",) + _A.SCORE_ALGOS),
    Option("hc_warmup", INT, 9999,
           "hc: after every 0-based epoch e >= hc_warmup with e % hc_period == 0 the scores "
           "themselves are rounded (`round`, `noise`) and the search goes on from them "
           "(upstream's periodic rounding; 9999: never)", G_SEARCH, low=0, algos=("hc",)),
    Option("hc_period", INT, 1, "hc: epochs between roundings of the scores after hc_warmup",
           G_SEARCH, low=1, algos=("hc",)),
    Option("rewind_score", BOOL, False,
           "hc_iter (BottomK / LocalBottomK): after every pruning step the scores go back to "
           "their values at the start of 0-based epoch rewind_to_epoch", G_SEARCH,
           algos=("hc_iter",)),
    Option("rewind_to_epoch", INT, -1,
           "0-based epoch whose starting scores rewind_score restores (0: the initial "
           "scores; -1: none, so rewind_score does nothing, as upstream)", G_SEARCH, low=-1,
           algos=("hc_iter",)),
    Option("bottom_k_on_forward", BOOL, False,
           "hc_iter (BottomK, hc_quantized): every forward pass keeps exactly the weights the "
           "next pruning step would keep (top scores among the flagged ones) instead of "
           "1[score > quantize_threshold]; the ticket is the final flags", G_SEARCH,
           algos=("hc_iter",)),
    Option("drop_bottom_half_weights", BOOL, False,
           "hc / hc_iter with `pretrained`: after the first epoch, clear the flags of the "
           "half of the flagged weights with the lowest scores (warm-started Gem-Miner)",
           G_SEARCH, algos=_A.HC_ALGOS),
    # ----------------------------------------------------------------- fine-tuning (issue 4)
    Option("unflag_before_finetune", BOOL, False,
           "set all scores to 1 before fine-tuning so the mask equals the flags (exactly "
           "target_sparsity for hc_iter BottomK); rejected for hc", G_FT, algos=_A.HC_ALGOS),
    Option("skip_fine_tune", BOOL, False, "stop after the search (no weight fine-tuning)",
           G_FT, algos=_A.FINETUNE_ALGOS),
    Option("fine_tune_optimizer", STR, "sgd", "optimizer of the fine-tuning phase", G_FT,
           choices=("sgd", "adam"), algos=_A.FINETUNE_ALGOS),
    Option("fine_tune_lr", FLOAT, 0.01, "learning rate of the fine-tuning phase", G_FT, low=0,
           algos=_A.FINETUNE_ALGOS),
    Option("fine_tune_lr_policy", STR, None,
           "schedule of the fine-tuning phase (unset: lr_policy)", G_FT,
           choices=("constant_lr", "cosine_lr", "multistep_lr"), nullable=True,
           algos=_A.FINETUNE_ALGOS),
    Option("fine_tune_wd", FLOAT, 0.0001, "weight decay of the fine-tuning phase", G_FT,
           low=0, algos=_A.FINETUNE_ALGOS),
    Option("skip_sanity_checks", BOOL, False,
           "skip the controls after fine-tuning (same mask with re-drawn weights; mask "
           "shuffled within each layer)", G_FT, algos=_A.SCORE_ALGOS),
    Option("invert_sanity_check", BOOL, False,
           "hc_iter: BottomK removes the highest scores instead of the lowest", G_FT,
           algos=("hc_iter",)),
    Option("only_sanity", BOOL, False,
           "run only the two sanity checks (fine-tunings of the re-drawn and the shuffled "
           "ticket) for the finished mask-search run(s) in sanity_folder, from their saved "
           "tickets, with this config's fine-tuning settings", G_FT),
    Option("sanity_folder", STR, None,
           "only_sanity: a run directory of a mask search, or a folder of them (upstream: "
           "a folder of result folders)", G_FT, nullable=True),
    # ----------------------------------------------------------------- IMP (issue 3)
    Option("imp_rewind_iter", ITERS, 1000,
           "IMP-WR rewind point: iterations into level 0 (0 = the initial weights, the "
           "original LTH), or '<N>ep' / '<N>it'", G_IMP, low=0, algos=_A.IMP_ALGOS),
    Option("imp_rounds", INT, -1,
           "IMP levels including the dense level 0 (-1: until target_sparsity if set, else "
           "epochs // iter_period as upstream)", G_IMP, low=-1, high=10_000, algos=_A.IMP_ALGOS,
           extends_algos=_A.IMP_ALGOS),
    Option("imp_no_rewind", BOOL, False, "upstream flag: IMP without weight rewinding "
           "(= imp_lrr)", G_IMP, algos=_A.IMP_ALGOS),
    Option("matching_tolerance", FLOAT, 0.5,
           "a level is matching when its test accuracy is at most this many points below "
           "the dense level 0", G_IMP, low=0, algos=_A.IMP_ALGOS, science=False),
    Option("imp_controls", STR_LIST, None,
           "control runs at imp_control_levels: reinit, shuffle_mask, shuffle_weights, "
           "random_mask, supermask, ticket (the ticket trained again; with data_subset prac "
           "on every training example)", G_IMP, nullable=True,
           choices=("reinit", "shuffle_mask", "shuffle_weights", "random_mask", "supermask",
                    "ticket"),
           algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("imp_control_levels", INT_LIST, None, "levels that get the controls (default: "
           "the last)", G_IMP, nullable=True, algos=_A.IMP_ALGOS,
           extends_algos=_A.IMP_ALGOS),
    Option("ticket", STR, None,
           "algo training: train a saved ticket.pt (its mask and start weights)", G_IMP,
           nullable=True, algos=("training",)),
    Option("data_subset", STR, "full",
           "training data of the IMP levels: full, or prac (level 0 on every example while "
           "counting forgetting events; later levels on the pruning-aware critical subset, "
           "Zhang et al. ICML 2021; see README)", G_IMP, choices=("full", "prac"),
           algos=_A.IMP_ALGOS),
    Option("prac_rule", STR, "threshold",
           "PrAC forgetting rule: threshold (examples forgotten more than prac_threshold "
           "times, or never learned) or fraction (the N·(1-prac_data_rate)^L most forgotten "
           "at level L)", G_IMP, choices=("threshold", "fraction"), algos=_A.IMP_ALGOS),
    Option("prac_threshold", INT, 0, "PrAC threshold rule: forgetting events an example "
           "must exceed", G_IMP, low=0, algos=_A.IMP_ALGOS),
    Option("prac_data_rate", FLOAT, 0.2, "PrAC fraction rule: share of the examples dropped "
           "per level", G_IMP, low=0, high=1, low_open=True, high_open=True,
           algos=_A.IMP_ALGOS),
    Option("prac_refresh", BOOL, True,
           "PrAC: re-select the subset before every level from that level's statistics "
           "(false: the subset of level 1 is kept)", G_IMP, algos=_A.IMP_ALGOS),
    Option("prac_epochs", STR, "scaled",
           "PrAC: epochs of a level on n of N examples: scaled (⌊E·n/N⌋, milestones scaled "
           "alike) or same (E)", G_IMP, choices=("scaled", "same"), algos=_A.IMP_ALGOS),
    # ----------------------------------------------------------------- at init (issue 5)
    Option("prune_batches", INT, 1,
           "snip, grasp: training minibatches (of batch_size) the scores are computed on",
           G_ATINIT, low=1, high=100_000, algos=("snip", "grasp")),
    Option("synflow_iterations", INT, 100,
           "synflow: rounds of scoring and pruning; round r of n keeps "
           "target^(r/n) of the weights (exponential schedule)", G_ATINIT, low=1, high=10_000,
           algos=("synflow",)),
    Option("random_distribution", STR, "uniform",
           "random: uniform (prune_scope global: exactly the target count uniformly over "
           "all pruned weights; local: the same fraction of every layer) or erk "
           "(Erdős–Rényi-kernel layer densities)", G_ATINIT, choices=("uniform", "erk"),
           algos=("random",)),
    Option("prune_iterations", INT, 1,
           "snip, grasp, magnitude_init, random: rounds of scoring at init; round r of k "
           "keeps target^(r/k) of the weights (1: one-shot)", G_ATINIT, low=1, high=10_000,
           algos=_A.AT_INIT_ALGOS),
    Option("forbid_layer_collapse", BOOL, False,
           "stop the run (exit 1) when pruning leaves a layer at 0 % density (else it is "
           "reported in the log and summary and the run continues)", G_ATINIT,
           algos=_A.TARGET_ALGOS),
    Option("at_init_controls", STR_LIST, None,
           "controls trained like the ticket: reinit (same mask, fresh weights), "
           "shuffle_mask (mask permuted within each layer over the initial weights), "
           "shuffle_weights (surviving initial weights permuted within each layer)",
           G_ATINIT, nullable=True, choices=("reinit", "shuffle_mask", "shuffle_weights"),
           algos=_A.AT_INIT_ALGOS),
    Option("prune_start_epoch", INT, 0,
           "gradual: epochs of dense training before the first pruning step", G_ATINIT,
           low=0, high=MAX_EPOCHS, algos=("gradual",)),
    Option("prune_end_epoch", INT, None,
           "gradual: the target density is reached after this epoch (unset: 3/4 of epochs, "
           "rounded down, at least prune_start_epoch + 1)", G_ATINIT, nullable=True, low=1,
           high=MAX_EPOCHS, algos=("gradual",)),
    Option("prune_every_steps", INT, 100,
           "gradual: optimizer steps between pruning steps (the last one also lands on "
           "prune_end_epoch)", G_ATINIT, low=1, algos=("gradual",)),
    Option("prune_schedule", STR, "cubic",
           "gradual: how the sparsity grows from prune_start_epoch to prune_end_epoch: "
           "cubic (Zhu & Gupta), linear, cosine, or one_shot (all at prune_start_epoch)",
           G_ATINIT, choices=("one_shot", "linear", "cubic", "cosine"), algos=("gradual",)),
    Option("eb_window", INT, 5,
           "early_bird: epochs whose masks the current mask is compared with", G_ATINIT,
           low=1, high=10_000, algos=("early_bird",)),
    Option("eb_epsilon", FLOAT, 0.1,
           "early_bird: the ticket is drawn when the largest normalised Hamming distance to "
           "the last eb_window masks is below this", G_ATINIT, low=0, high=1, low_open=True,
           algos=("early_bird",)),
    # ----------------------------------------------------------------- analysis (IMP runs)
    Option("lmc_successive", BOOL, False,
           "error barrier between the solutions of level L-1 and L after every level",
           G_ANALYSIS, algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("lmc_matrix", BOOL, False,
           "error barriers between all pairs of levels at the end (CSV + heatmap)",
           G_ANALYSIS, algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("lmc_points", INT, 11, "points (values of γ) on each interpolation path",
           G_ANALYSIS, low=2, high=10_000, algos=_A.IMP_ALGOS + ("mode_connect",),
           extends_algos=_A.IMP_ALGOS),
    Option("bn_reset_batches", INT, 20,
           "training batches used to re-estimate BatchNorm statistics at every "
           "interpolated point (0: keep the interpolated statistics)", G_ANALYSIS, low=0,
           high=100_000, algos=_A.IMP_ALGOS + ("mode_connect",), extends_algos=_A.IMP_ALGOS),
    Option("stability_copies", INT, 0,
           "train this many copies of a level from its start with different data orders and "
           "report their barrier (instability analysis; 0: off)", G_ANALYSIS, low=0, high=1000,
           algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("stability_levels", INT_LIST, None,
           "levels that get the stability copies (default: the last)", G_ANALYSIS,
           nullable=True, algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("hessian_topk", INT, 0,
           "top eigenvalues of the training-loss Hessian at every level's solution (0: off)",
           G_ANALYSIS, low=0, high=1000, algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("hessian_trace", BOOL, False, "Hutchinson estimate of the Hessian trace per level",
           G_ANALYSIS, algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("hessian_batches", INT, 10, "training batches the Hessian is measured on",
           G_ANALYSIS, low=1, high=100_000, algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("hessian_iters", INT, 100, "maximum power iterations per eigenvalue", G_ANALYSIS,
           low=1, high=1_000_000, algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("hessian_samples", INT, 50, "Hutchinson samples for the trace", G_ANALYSIS,
           low=1, high=1_000_000, algos=_A.IMP_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("landscape_grid", INT, 0,
           "grid points per axis of the 2-D error slice through w(L-1), m(L)⊙w(L-1) and "
           "w(L) at every level (0: off)", G_ANALYSIS, low=0, high=1000, algos=_A.IMP_ALGOS,
           extends_algos=_A.IMP_ALGOS),
    Option("grad_flow", BOOL, False,
           "gradient norm of the training loss where training starts: IMP at each level's "
           "start (dense at init, tickets at the rewind point) and every control's start "
           "(levels.csv, controls.csv); mask searches and pruning at init for the dense "
           "network at init, the ticket and each sanity check / control (summary.json)",
           G_ANALYSIS, algos=_GRAD_FLOW_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("grad_flow_batches", INT, 10, "training batches (of batch_size, in order, no "
           "augmentation) the gradient norm is taken over", G_ANALYSIS, low=1,
           algos=_GRAD_FLOW_ALGOS, extends_algos=_A.IMP_ALGOS),
    Option("adaptive_prune_rate", BOOL, False,
           "choose each level's pruning fraction from the curvature (see README)",
           G_ANALYSIS, algos=_A.IMP_ALGOS),
    Option("min_prune_rate", FLOAT, 0.05, "smallest adaptive pruning fraction", G_ANALYSIS,
           low=0, high=1, low_open=True, high_open=True, algos=_A.IMP_ALGOS),
    Option("max_prune_rate", FLOAT, 0.5, "largest adaptive pruning fraction", G_ANALYSIS,
           low=0, high=1, low_open=True, high_open=True, algos=_A.IMP_ALGOS),
    Option("adaptive_epsilon", FLOAT, 0.05,
           "largest predicted training-loss increase ½ δᵀHδ (nats) a level's pruning may "
           "cause", G_ANALYSIS, low=0, low_open=True, algos=_A.IMP_ALGOS),
    # ----------------------------------------------------------------- hardware
    Option("device", STR, "auto", "auto: CUDA when available, else CPU", G_HW,
           choices=("auto", "cpu", "cuda"), science=False),
    Option("gpu", INT, 0, "CUDA device index", G_HW, low=0,
           high=1024, science=False, nullable=True),
    Option("precision", STR, "auto", "auto: bf16 autocast on CUDA, fp32 on CPU", G_HW,
           choices=("auto", "fp32", "bf16")),
    Option("mixed_precision", BOOL, False,
           "upstream flag, accepted: bf16 autocast is already the CUDA default "
           "(precision: auto); use precision: fp32 for full precision", G_HW, science=False),
    Option("channels_last", BOOL, None,
           "channels_last memory format for the model and its inputs (unset: on for CUDA, "
           "off on CPU)", G_HW, nullable=True, science=False),
    Option("compile", BOOL, None,
           "torch.compile the model; compiled once per run and reused by every phase and "
           "level (unset: on for CUDA phases of at least 20,000 steps, off on CPU)", G_HW,
           nullable=True, science=False),
    Option("cuda_graphs", BOOL, None,
           "record each training and evaluation step once as a CUDA graph and replay it per "
           "batch (unset: on for CUDA; no effect on CPU or under torchrun)", G_HW,
           nullable=True, science=False),
    Option("packing", STR, "auto",
           "how replicates > 1 share the device: streams (one model per copy; on CUDA their "
           "graphs replay concurrently on separate streams), vmap (parameters stacked, one "
           "batched kernel per layer); auto: streams", G_HW, science=False,
           choices=("auto", "streams", "vmap")),
    Option("multiprocessing_distributed", BOOL, False,
           "upstream flag: data-parallel over the visible GPUs; launch with torchrun "
           "(README: Scaling out); with one GPU or on CPU it runs one process", G_HW,
           science=False),
    Option("world_size", INT, -1, "upstream: number of nodes; under torchrun it must match "
           "the launch (-1: take it from torchrun)", G_HW, science=False),
    Option("rank", INT, -1, "upstream: this node's rank; under torchrun it must match "
           "--node_rank (-1: take it from torchrun)", G_HW, science=False),
    Option("dist_backend", STR, "auto", "process-group backend under torchrun (auto: nccl on "
           "CUDA, gloo on CPU)", G_HW, science=False, choices=("auto", "nccl", "gloo")),
    Option("batch_size_is_global", BOOL, False,
           "under torchrun: batch_size is the global batch (split over the processes) "
           "instead of the batch of each process", G_HW, science=False),
    # ----------------------------------------------------------------- run control
    Option("resume", STR, None,
           "run directory (or a file in it) to continue; runs also resume automatically",
           G_RUN, nullable=True, science=False),
    Option("evaluate", BOOL, False,
           "only evaluate the `pretrained` weights on validation and test", G_RUN),
    Option("mode_connect", BOOL, False,
           "with evaluate: error along the linear path between the networks `pretrained` and "
           "`pretrained2` (through their effective weights mask ⊙ weight; lmc_points points, "
           "BatchNorm re-estimated on bn_reset_batches batches) and the error barrier",
           G_RUN),
    Option("pretrained2", STR, None, "mode_connect: the second network (.pt)", G_RUN,
           nullable=True),
    Option("dry_run", BOOL, False, "print the resolved config and plan, write nothing",
           G_RUN, science=False, yaml=False),
    Option("force", BOOL, False, "re-run a finished run into a fresh directory", G_RUN,
           science=False, yaml=False),
    Option("quiet", BOOL, False, "no progress bars", G_RUN, science=False, yaml=False),
    # ----------------------------------------------------------------- legacy no-op keys
    *(_legacy(n) for n in (
        "weight_decay", "iter_ep", "num_epochs", "compare_rounding",
        "submask_size", "metric", "pruning_strategy", "how_to_prune", "hidden_size", "td",
        "temp", "max_iter", "flips", "log_interval", "data_dir", "save_plot_data",
        "start_from_nothing",
        # further keys found in upstream's config files that its code did not read
        "lr_adjust", "set", "loss", "width", "eval_batch_size", "results_root", "gamma",
        "weight_traing", "bias_lastlayer")),
    Option("transfer_learning", STR, None,
           "legacy upstream key, no effect here: upstream's later code loaded ImageNet-"
           "pretrained torchvision weights with it; give `pretrained: FILE` for a "
           "pretrained start", G_LEGACY, nullable=True, science=False, status=LEGACY),
    # ----------------------------------------------------------------- upstream-only features
    _unsupported("toggle_warmup", False, "hc warm-up toggling"),
    _unsupported("fast_sparse", False, "300-epoch fine-tuning shortcut"),
    _unsupported("unif_prune", True, "non-uniform pruning rates (PRs / epoch_pr)"),
    _unsupported("PRs", None, "per-epoch pruning rates"),
    _unsupported("epoch_pr", None, "epochs at which PRs start"),
    _unsupported("only_finetune", False, "fine-tune a saved mask only"),
    _unsupported("lam_finetune_loss", -1, "fine-tune-loss term during the search; "
                 "upstream's trainer raised NotImplementedError for it"),
    _unsupported("num_step_finetune", 10, "steps of that fine-tune-loss term"),
    _unsupported("random_round", False, "repeated random rounding at test time"),
    _unsupported("random_round_type", None, "vote used by random_round"),
    _unsupported("num_coin_flip_round", None, "coin flips of random_round"),
    _unsupported("load_ckpt", None, "checkpoint to start from (use pretrained)"),
    _unsupported("uv_decomp", False, "low-rank weight decomposition"),
    _unsupported("HC_cont", False, "continuous hc variant"),
    _unsupported("fine_tune_lr_gamma", None, "separate multistep factor for fine-tuning"),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
GROUP_ORDER = (G_EXP, G_DATA, G_MODEL, G_OPT, G_SEARCH, G_FT, G_IMP, G_ANALYSIS, G_ATINIT,
               G_HW, G_RUN,
               G_LEGACY, G_UNSUPPORTED)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Where:
    """Where a value came from, for error messages: a file (and line) or the command line."""

    file: str | None = None
    line: int | None = None

    def label(self, opt: Option | None = None, key: str | None = None) -> str:
        if self.file is None:
            return f"command line: {opt.flag if opt else '--' + str(key)}"
        loc = f"{self.file}:{self.line}" if self.line else self.file
        return f"{loc}: key '{opt.name if opt else key}'"


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"none", "null", "~"}


def coerce(opt: Option, raw: Any, where: Where) -> Any:
    """Parse and check one raw value (YAML-typed or a command-line string) for `opt`."""
    if opt.status in IGNORED:
        return raw
    here = where.label(opt)
    if isinstance(raw, (list, tuple)) and opt.kind not in LIST_KINDS:
        raise ConfigError(f"{here} expects a single {_kind_text(opt)}, got a list {raw}")
    if opt.kind in LIST_KINDS and _clears_list(raw):
        raw = None           # `--imp-controls none` (or null, or '') clears a list option
    if any(raw is u or (type(raw) is type(u) and raw == u) for u in opt.unset_values) \
            or (isinstance(raw, str) and opt.unset_values and raw.strip() in map(
                str, opt.unset_values)):
        raw = None
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in _NULL):
        if opt.nullable:
            return None
        raise ConfigError(f"{here} cannot be empty (expects {_kind_text(opt)})")
    value = _parse_kind(opt, raw, here)
    _check_value(opt, value, here)
    if opt.kind in LIST_KINDS and not value:
        return None          # an empty list means unset
    return value


def _clears_list(raw: Any) -> bool:
    """A list value that means "no list": one word none / null / ~ or an empty string (the
    command line gives lists as ['none'])."""
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    return len(items) == 1 and isinstance(items[0], str) and \
        items[0].strip().lower() in _NULL | {""}


def _kind_text(opt: Option) -> str:
    return {BOOL: "true or false", INT: "an integer", FLOAT: "a number",
            STR: "a string", INT_LIST: "a list of integers", STR_LIST: "a list of names",
            ITERS: "an iteration count or '<N>ep' / '<N>it'"}[opt.kind]


def _parse_kind(opt: Option, raw: Any, here: str) -> Any:
    bad = ConfigError(f"{here} expects {_kind_text(opt)}, got {raw!r}")
    if opt.kind == BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise bad
    if opt.kind == INT:
        return _to_int(raw, bad)
    if opt.kind == FLOAT:
        if isinstance(raw, bool):
            raise bad
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise bad from None
        if not math.isfinite(value):
            raise bad
        return value
    if opt.kind in LIST_KINDS:
        items = raw if isinstance(raw, (list, tuple)) else (
            raw.replace(",", " ").split() if isinstance(raw, str) else [raw])
        if opt.kind == INT_LIST:
            return [_to_int(item, bad) for item in items]
        return [_parse_name(opt, item, here) for item in items]
    if opt.kind == ITERS:
        return _parse_iters(raw, bad)
    return _parse_name(opt, raw, here)


def _parse_iters(raw: Any, bad: ConfigError):
    """An int (iterations), '<N>it' (→ N) or '<N>ep' (kept as text: epochs)."""
    if isinstance(raw, str):
        text = raw.strip().lower().replace(" ", "")
        for unit in ("ep", "it"):
            if text.endswith(unit) and text[:-len(unit)].isdigit():
                return f"{int(text[:-2])}ep" if unit == "ep" else int(text[:-2])
    return _to_int(raw, bad)


def _parse_name(opt: Option, raw: Any, here: str) -> str:
    """A string value; with choices, matched case-insensitively to the canonical spelling."""
    if isinstance(raw, (dict, list, bool)):
        raise ConfigError(f"{here} expects {_kind_text(opt)}, got {raw!r}")
    text = str(raw)
    if opt.choices:
        exact = {c.lower(): c for c in opt.choices}
        if text.lower() in exact:
            return exact[text.lower()]
        for name, reason in opt.refused:
            if text.lower() == name.lower():
                raise ConfigError(f"{here}: {text!r} {reason}")
        hint = difflib.get_close_matches(text, opt.choices, n=1, cutoff=0.5)
        hint_text = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(f"{here} must be one of: {', '.join(opt.choices)}; "
                          f"got {text!r}{hint_text}")
    return text


def _to_int(raw: Any, bad: ConfigError) -> int:
    if isinstance(raw, bool):
        raise bad
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            raise bad from None
    raise bad


def _check_value(opt: Option, value: Any, here: str) -> None:
    values = value if isinstance(value, list) else [value]
    if opt.kind == STR_LIST and len(set(values)) != len(values):
        raise ConfigError(f"{here} lists a name twice: {values}")
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if isinstance(v, int) and not -MAX_INT <= v <= MAX_INT:
            raise ConfigError(f"{here} is too large for a 64-bit integer, got {v}")
        too_low = opt.low is not None and (v <= opt.low if opt.low_open else v < opt.low)
        too_high = opt.high is not None and (v >= opt.high if opt.high_open else v > opt.high)
        if too_low or too_high:
            raise ConfigError(f"{here} must be {opt.bounds_text()}, got {_fmt(v)}")


# --------------------------------------------------------------------------- YAML files


MAX_CONFIG_BYTES = 1 << 20     # a config is a page of `key: value` lines


class _KeyLineLoader(yaml.SafeLoader):
    """The safe loader (plain data only) used for config files."""


def read_yaml_config(path: str) -> tuple[dict, dict, list]:
    """Read a config file → (values, line of each key, warnings).

    Raises ConfigError naming the file: not a regular file (a device such as /dev/zero),
    larger than MAX_CONFIG_BYTES, malformed, with aliases (`*name`: refused, so no file can
    expand into gigabytes), or with a key given twice with different values.  A key repeated
    with the same value (several upstream configs do) keeps loading, with a warning.
    """
    text = _read_config_text(path)
    try:
        for event in yaml.parse(text, Loader=_KeyLineLoader):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(f"{path}:{event.start_mark.line + 1}: YAML aliases "
                                  f"(*{event.anchor}) are not accepted in config files; "
                                  f"write the value out")
        node, values = _compose_and_construct(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if values is None:
        return {}, {}, []
    if not isinstance(values, dict) or not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}: the top level must be a mapping of `option: value` lines")
    lines: dict = {}
    first_value: dict = {}
    warnings = []
    for key_node, value_node in node.value:
        key = key_node.value
        line = key_node.start_mark.line + 1
        if key in lines:
            if _node_data(value_node) != first_value[key]:
                raise ConfigError(f"{path}:{line}: key '{key}' is given twice with different "
                                  f"values (lines {lines[key]} and {line}); keep one")
            warnings.append(f"warning: {path}:{line}: key '{key}' appears twice (also at line "
                            f"{lines[key]}) with the same value")
        else:
            first_value[key] = _node_data(value_node)
        lines[key] = line
    for key in values:
        if not isinstance(key, str):
            raise ConfigError(f"{path}: keys must be option names, got {key!r}")
    return values, lines, warnings


def _read_config_text(path: str) -> str:
    """The text of a config file; ConfigError for anything but a readable regular file of
    at most MAX_CONFIG_BYTES."""
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    if os.path.isdir(path):
        raise ConfigError(f"config path is a directory, not a YAML file: {path}")
    if not os.path.isfile(path):
        raise ConfigError(f"config path is not a regular file (a device or pipe?): {path}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; "
                              f"is it really a config?")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read config file {path}: {reason}") from None


def _compose_and_construct(text: str):
    """(node tree, plain values) of one YAML document, parsed once with the safe loader: the
    nodes carry each key's line, the values are built from those same nodes."""
    loader = _KeyLineLoader(text)
    try:
        node = loader.get_single_node()
        return node, (None if node is None else loader.construct_document(node))
    finally:
        loader.dispose()


def _node_data(node) -> tuple:
    """A comparable form of a YAML node (tag and text, recursively)."""
    if isinstance(node, yaml.ScalarNode):
        return node.tag, node.value
    if isinstance(node, yaml.SequenceNode):
        return node.tag, tuple(_node_data(n) for n in node.value)
    return node.tag, tuple((_node_data(k), _node_data(v)) for k, v in node.value)


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit; we want one line
        raise ConfigError(f"command line: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser generated from OPTIONS (values are parsed by `coerce`)."""
    parser = _Parser(
        prog="main.py", allow_abbrev=False,
        description="Lottery-ticket / pruning experiment runner. Options may be given in the "
                    "YAML file (underscores) or here (dashes or underscores); the command "
                    "line wins.")
    groups = {g: parser.add_argument_group(g) for g in GROUP_ORDER}
    for opt in OPTIONS:
        flags = [opt.flag] + ([f"--{opt.name}"] if "_" in opt.name else [])
        kwargs: dict = {"dest": opt.name, "default": argparse.SUPPRESS,
                        "help": _help_text(opt)}
        if opt.kind == BOOL:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        elif opt.kind == INT_LIST:
            kwargs.update(nargs="+", metavar="N")
        elif opt.kind == STR_LIST:
            kwargs.update(nargs="+", metavar="NAME")
        else:
            kwargs.update(metavar=opt.kind.upper() if not opt.choices else "{" + ",".join(
                opt.choices) + "}")
        groups[opt.group].add_argument(*flags, **kwargs)
    return parser


def _help_text(opt: Option) -> str:
    parts = [opt.help.replace("%", "%%")]
    if opt.yaml and opt.status != LEGACY:
        parts.append(f"(default: {_show(opt.default)})")
    if opt.bounds_text():
        parts.append(f"[{opt.bounds_text()}]")
    if opt.status == LATER:
        parts.append(f"[{opt.planned}: not implemented yet]")
    return " ".join(parts)


def _check_replicates(config, v: dict, algo: str) -> None:
    """`replicates > 1`: only for the algorithms packed training covers."""
    where = config.where("replicates")
    if algo not in algo_registry.PACKED_ALGOS:
        raise ConfigError(f"{where}: not implemented yet for algo '{algo}' (packed "
                          f"replicates: algos {', '.join(algo_registry.PACKED_ALGOS)}); set it "
                          f"to 1")
    for key, why in (("adaptive_prune_rate", "each copy would choose its own schedule"),
                     ("ckpt_at_fixed_epochs", "packed training saves no per-epoch models"),
                     ("data_subset", "each copy would choose its own training subset"),
                     ("evaluate", "evaluation trains nothing"),
                     ("resume", "a packed run resumes when its command is run again")):
        if v[key] and v[key] != "full":
            raise ConfigError(f"{where}: cannot be combined with {key} ({why}); set "
                              f"replicates to 1")


MAX_NAME_BYTES = 200   # the run directory adds -<hash8> (and -rK) within the 255-byte limit


def _check_run_location(config) -> None:
    """`name` is one folder name and `subfolder` a relative path: the run directory stays
    inside log_dir and its name fits the file system."""
    name, sub = config.values["name"], config.values["subfolder"]
    where = config.where("name")
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ConfigError(f"{where}: {name!r} is not a folder name (no '/', not '.' or "
                          f"'..'); the run directory must stay inside log_dir")
    size = len(os.fsencode(name))
    if size > MAX_NAME_BYTES:
        raise ConfigError(f"{where}: the run name is {size} bytes long ({name[:32]}...); at "
                          f"most {MAX_NAME_BYTES}: set a shorter --name")
    if sub is not None:
        parts = sub.split("/")
        if os.path.isabs(sub) or ".." in parts or "\0" in sub or any(
                len(os.fsencode(part)) > 255 for part in parts):
            raise ConfigError(f"{config.where('subfolder')}: {sub!r} must be a relative path "
                              f"inside log_dir (no '..', no absolute path)")


def _show(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


# --------------------------------------------------------------------------- resolution


@dataclass
class Config:
    """A resolved config: every option's value, where explicit values came from, warnings."""

    values: dict
    sources: dict = field(default_factory=dict)    # name → Where for explicitly set options
    warnings: list = field(default_factory=list)

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def explicit(self, name: str) -> bool:
        return name in self.sources

    def where(self, name: str) -> str:
        src = self.sources.get(name)
        return src.label(OPTIONS_BY_NAME[name]) if src else f"key '{name}' (default)"

    @property
    def algo_name(self) -> str:
        return algo_registry.effective_algo(self.values)

    @property
    def run_seed(self) -> int:
        return self.seed * self.trial_num

    def yaml_values(self) -> dict:
        """The options a config file holds, in schema order (no CLI-only or legacy keys)."""
        return {o.name: self.values[o.name] for o in OPTIONS
                if o.yaml and o.status not in IGNORED and o.name != "resume"}

    def science_values(self) -> dict:
        """Science options whose value differs from the default (what the run hash covers).

        Options that only extend a run of this algorithm (IMP: more levels, more controls)
        are left out, so a longer run continues in the same directory."""
        algo = self.algo_name
        return {o.name: self.values[o.name] for o in OPTIONS
                if o.science and o.yaml and o.status not in IGNORED
                and algo not in o.extends_algos and self.values[o.name] != o.default}

    def science_settings(self) -> dict:
        """Every science option that matters for this run's algorithm, with its value
        (defaults included; lists and other values as given): what defines the experiment,
        for TensorBoard's HParams tab."""
        algo = self.algo_name
        return {o.name: self.values[o.name] for o in OPTIONS
                if o.science and o.yaml and o.status not in IGNORED
                and (not o.algos or algo in o.algos)}

    def run_hash(self) -> str:
        blob = json.dumps(self.science_values(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def replace(self, **changes) -> "Config":
        values = dict(self.values)
        values.update(changes)
        return Config(values, dict(self.sources), list(self.warnings))

    def to_yaml(self) -> str:
        """The resolved config as YAML, grouped and commented; reloading it gives this config."""
        chunks = ["# Resolved config written by main.py; "
                  "`python main.py --config <this file>` reproduces the run.\n"]
        values = self.yaml_values()
        for group in GROUP_ORDER:
            names = [o.name for o in OPTIONS if o.group == group and o.name in values]
            if not names:
                continue
            chunks.append(f"\n# ---- {group}\n")
            for name in names:  # one key per line, lists inline
                value = values[name]
                chunks.append(yaml.safe_dump({name: value}, width=1000, default_flow_style=(
                    None if isinstance(value, list) else False)))
        return "".join(chunks)


def resolve(argv: list[str]) -> Config:
    """Parse the command line, read the YAML file it names, validate → Config.

    Raises ConfigError (one line naming the file/flag and key) on any bad input.
    """
    parser = build_parser()
    namespace, leftovers = parser.parse_known_args(argv)
    if leftovers:
        raise ConfigError(_leftover_message(leftovers))
    cli = vars(namespace)
    config_path = cli.get("config")

    values: dict = {}
    sources: dict = {}
    warnings: list = []
    if cli.get("resume") and not config_path:
        config_path = _config_of_run(str(cli["resume"]))
    given: list = []   # (option, raw value, where) in precedence order
    if config_path:
        file_values, lines, file_warnings = read_yaml_config(config_path)
        warnings.extend(file_warnings)
        for key, raw in file_values.items():
            where = Where(config_path, lines.get(key))
            opt = OPTIONS_BY_NAME.get(key)
            if opt is None:
                _refuse_out_of_scope(file_values, lines, config_path)
                raise ConfigError(f"{where.label(key=key)} is unknown{_suggest(key, '')}")
            if not opt.yaml:
                raise ConfigError(f"{where.label(opt)} is a command-line flag "
                                  f"({opt.flag}), not a config key")
            given.append((opt, raw, where))
    given.extend((OPTIONS_BY_NAME[key], raw, Where()) for key, raw in cli.items())
    for opt, raw, where in given:
        if opt.status in IGNORED:
            warnings.append(_ignored_key_warning(opt, raw, where))
            continue
        values[opt.name] = coerce(opt, raw, where)
        sources[opt.name] = where
    if config_path:
        values["config"] = config_path
    for opt in OPTIONS:
        values.setdefault(opt.name, opt.default)
    # null means "the default" for options whose default is a value (bn_type: null, ...)
    for opt in OPTIONS:
        if values[opt.name] is None and opt.default is not None:
            values[opt.name] = opt.default
    if values["name"] is None:  # saved in config.yaml, so re-running it finds the same dir
        values["name"] = os.path.splitext(os.path.basename(config_path))[0] \
            if config_path else "run"
    config = Config(values, sources, warnings)
    validate(config)
    return config


def _refuse_out_of_scope(file_values: dict, lines: dict, path: str) -> None:
    """A config of upstream's separate experiments (an architecture or dataset refused with
    a reason) is refused for that reason before its experiment-specific keys are reported
    as unknown."""
    for key in ("arch", "dataset"):
        raw = file_values.get(key)
        if isinstance(raw, str):
            coerce(OPTIONS_BY_NAME[key], raw, Where(path, lines.get(key)))


def _ignored_key_warning(opt: Option, raw, where: Where) -> str:
    """The warning for a legacy or unsupported key; raises for an unsupported key that is set
    to anything but its upstream default (it would silently change the experiment)."""
    if opt.status == UNSUPPORTED:
        at_default = raw is None or raw == opt.default or (
            isinstance(raw, str) and raw.strip().lower() in (str(opt.default).lower(),
                                                             *_NULL))
        if not at_default:
            raise ConfigError(f"{where.label(opt)}: upstream feature not supported here "
                              f"({opt.help}); remove the key or set it to "
                              f"{_show(opt.default)}")
        return f"warning: {where.label(opt)} ({opt.help}) is at its upstream default; ignored"
    if opt.help != _LEGACY_HELP:
        return f"warning: {where.label(opt)}: {opt.help}; ignored"
    return f"warning: {where.label(opt)} has no effect (legacy upstream key); ignored"


def run_dir_of(resume: str) -> str:
    """The run directory named by `resume`: the directory itself or a file inside it."""
    run_dir = resume
    if os.path.isfile(resume):
        run_dir = os.path.dirname(os.path.abspath(resume))
        if os.path.basename(run_dir) == "checkpoints":
            run_dir = os.path.dirname(run_dir)
    return run_dir


def _config_of_run(resume: str) -> str:
    path = os.path.join(run_dir_of(resume), "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"command line: --resume {resume}: no config.yaml in "
                          f"{run_dir_of(resume)}")
    return path


def _suggest(name: str, prefix: str) -> str:
    names = [o.name for o in OPTIONS]
    match = difflib.get_close_matches(name.replace("-", "_"), names, n=1, cutoff=0.6)
    if not match:
        return ""
    shown = prefix + (match[0].replace("_", "-") if prefix else match[0])
    return f" (did you mean '{shown}'?)"


def _leftover_message(leftovers: list[str]) -> str:
    first = leftovers[0]
    if first.startswith("-"):
        return f"command line: unknown option {first}{_suggest(first.lstrip('-'), '--')}"
    return f"command line: unexpected argument {first!r} (options start with --)"


def validate(config: Config) -> None:
    """Cross-option checks and the 'not implemented yet' rule; raises ConfigError."""
    v = config.values
    algo = config.algo_name
    if algo in algo_registry.PLANNED:
        src = "random_subnet" if v["random_subnet"] else "algo"
        raise ConfigError(
            f"{config.where(src)}: not implemented yet: algo '{algo}' "
            f"({algo_registry.PLANNED[algo]}); available now: "
            f"{', '.join(algo_registry.ALGORITHMS)}")
    for key, registry in (("arch", model_registry), ("dataset", data_registry)):
        if v[key] in registry.PLANNED:
            available = ", ".join(getattr(registry, "ARCHITECTURES", None)
                                  or getattr(registry, "DATASETS"))
            raise ConfigError(f"{config.where(key)}: not implemented yet: {key} '{v[key]}' "
                              f"({registry.PLANNED[v[key]]}); available now: {available}")
    for opt in OPTIONS:
        if opt.status != LATER or v[opt.name] == opt.default:
            continue
        if not opt.algos or algo in opt.algos:
            raise ConfigError(f"{config.where(opt.name)}: not implemented yet: {opt.name} "
                              f"({opt.planned}); leave it unset or at {_show(opt.default)}")
    ignored = [o.name for o in OPTIONS
               if o.algos and algo not in o.algos and o.name in config.sources
               and v[o.name] != o.default]
    if ignored:
        config.warnings.append(f"note: no effect for algo '{algo}': {', '.join(ignored)}")
    if v["replicates"] > 1:
        _check_replicates(config, v, algo)
    _check_run_location(config)
    if v["warmup_length"] >= v["epochs"] and v["warmup_length"] > 0:
        raise ConfigError(f"{config.where('warmup_length')} must be smaller than epochs "
                          f"({v['epochs']}), got {v['warmup_length']}")
    search_checks.validate_search(config)
    upstream_checks.validate_upstream_features(config)
    granularity_checks.validate_granularity(config)
    target_checks.validate_target_pruning(config)
    milestones = v["milestones"]
    if milestones is not None:
        if not milestones or any(m <= 0 for m in milestones) or sorted(set(milestones)) \
                != milestones:
            raise ConfigError(f"{config.where('milestones')} must be increasing positive "
                              f"epochs, got {milestones}")
    if v["evaluate"] and not v["pretrained"]:
        raise ConfigError(f"{config.where('evaluate')}: evaluate needs `pretrained` "
                          f"(the weights to evaluate)")
    if v["pretrained"] and not os.path.isfile(v["pretrained"]):
        raise ConfigError(f"{config.where('pretrained')}: file not found: {v['pretrained']}")


# --------------------------------------------------------------------------- documentation


def markdown_table() -> str:
    """The README option table, one section per group."""
    out = []
    for group in GROUP_ORDER:
        opts = [o for o in OPTIONS if o.group == group]
        if group == G_LEGACY:
            out.append(f"**{group}:** " + ", ".join(f"`{o.name}`" for o in opts) + "\n")
            continue
        if group == G_UNSUPPORTED:
            out.append(f"**{group}:** " + ", ".join(
                f"`{o.name}` ({_show(o.default)}; {o.help})" for o in opts) + "\n")
            continue
        out.append(f"**{group}**\n\n| option | type | default | meaning |\n|---|---|---|---|")
        for o in opts:
            kind = "{" + ", ".join(o.choices) + "}" if o.choices else o.kind
            meaning = o.help + (f" [{o.bounds_text()}]" if o.bounds_text() else "")
            if o.status == LATER:
                meaning += f" *({o.planned}; not implemented yet)*"
            if not o.yaml:
                meaning += " *(command line only)*"
            name = f"`{o.name}`"
            out.append(f"| {name} | {kind} | {_show(o.default) if o.yaml else ''} | "
                       f"{meaning.replace('|', '/')} |")
        out.append("")
    return "\n".join(out)


def update_readme(path: str = "README.md") -> None:
    """Replace the option table between the README's `options:begin/end` markers."""
    begin, end = "<!-- options:begin -->", "<!-- options:end -->"
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"{head}{begin}\n{markdown_table().strip()}\n{end}{tail}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown_table())
    elif sys.argv[1:2] == ["--update-readme"]:
        update_readme(*sys.argv[2:3])
    else:
        print("usage: python args_helper.py --markdown | --update-readme [README.md]")
