"""Algorithm names → `Algorithm` objects ("module:function", imported on demand); no torch import.

`effective_algo` maps upstream's flag combinations onto one algorithm name, the way
upstream's main dispatched them.
"""

ALGORITHMS = {
    "training": "pruners.training:TRAINING",
    "hc_iter": "pruners.search.gem_miner:HC_ITER",
    "hc": "pruners.search.gem_miner:HC",
    "ep": "pruners.search.edge_popup:EP",
    "global_ep": "pruners.search.edge_popup:GLOBAL_EP",
    "global_ep_iter": "pruners.search.edge_popup:GLOBAL_EP_ITER",
    "random_subnet": "pruners.search.random_subnet:RANDOM_SUBNET",
    "smart_ratio": "pruners.search.random_subnet:SMART_RATIO",
    "imp": "pruners.imp.run:IMP",
    "imp_wr": "pruners.imp.run:IMP",
    "imp_lrr": "pruners.imp.run:IMP",
    "imp_ft": "pruners.imp.run:IMP",
    "snip": "pruners.at_init.run:SNIP",
    "grasp": "pruners.at_init.run:GRASP",
    "synflow": "pruners.at_init.run:SYNFLOW",
    "magnitude_init": "pruners.at_init.run:MAGNITUDE_INIT",
    "random": "pruners.at_init.run:RANDOM",
    "gradual": "pruners.during_training.gradual:GRADUAL",
    "early_bird": "pruners.during_training.early_bird:EARLY_BIRD",
    # selected by upstream's flags, not by `algo` (see effective_algo)
    "only_sanity": "pruners.search.sanity_only:ONLY_SANITY",
    "mode_connect": "pruners.search.mode_connect:MODE_CONNECT",
}

PLANNED: dict[str, str] = {}

# Values accepted for the `algo` key (the flag-selected runs are not spelled as algo).
FLAG_SELECTED = ("random_subnet", "smart_ratio", "only_sanity", "mode_connect")
ALGO_CHOICES = tuple(name for name in [*ALGORITHMS, *PLANNED] if name not in FLAG_SELECTED)

# Families, used by the schema to say which options matter for which algorithm.
SCORE_ALGOS = ("hc_iter", "hc", "ep", "global_ep", "global_ep_iter")
HC_ALGOS = ("hc_iter", "hc")
EP_ALGOS = ("ep", "global_ep", "global_ep_iter")
IMP_ALGOS = ("imp", "imp_wr", "imp_lrr", "imp_ft")
FINETUNE_ALGOS = SCORE_ALGOS + ("random_subnet", "smart_ratio")
AT_INIT_ALGOS = ("snip", "grasp", "synflow", "magnitude_init", "random")
DURING_TRAINING_ALGOS = ("gradual", "early_bird")
# algorithms that prune by a ranking to exactly `target_sparsity` % (scope, ignore apply)
TARGET_ALGOS = AT_INIT_ALGOS + DURING_TRAINING_ALGOS
# algorithms with prune_granularity channel and n:m (grasp and early_bird: weight only)
GRANULARITY_ALGOS = IMP_ALGOS + ("gradual", "magnitude_init", "random", "snip", "synflow")
# algorithms that train `replicates: M` copies packed (pruners/replicates.py): those whose
# `Algorithm` has `jobs` or `run_packed` (tests/test_packed.py checks that the two agree)
PACKED_ALGOS = ("training",) + IMP_ALGOS + AT_INIT_ALGOS


def effective_algo(values: dict) -> str:
    """The algorithm a resolved config runs (upstream's flags take precedence over `algo`):
    mode connectivity of two saved networks, dense weight training, a random subnetwork,
    only the sanity checks of saved runs."""
    if values.get("mode_connect") and values.get("evaluate") and values.get("pretrained2"):
        return "mode_connect"
    if values.get("weight_training"):
        return "training"
    if values.get("random_subnet"):
        return "smart_ratio" if (values.get("smart_ratio") or -1) > 0 else "random_subnet"
    if values.get("only_sanity"):
        return "only_sanity"
    algo = values.get("algo")
    if algo == "imp" and values.get("imp_no_rewind"):
        return "imp_lrr"
    return algo
