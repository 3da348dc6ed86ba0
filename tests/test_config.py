"""The option schema: flags, precedence, types, YAML reading, hashing, documentation."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

import args_helper
from args_helper import OPTIONS, resolve
from conftest import REPO, write_config
from utils.errors import ConfigError


def test_dash_and_underscore_flags_are_the_same_option():
    a = resolve(["--algo", "training", "--fine-tune-lr", "0.05", "--use-full-data"])
    b = resolve(["--algo", "training", "--fine_tune_lr", "0.05", "--use_full_data"])
    assert a.fine_tune_lr == b.fine_tune_lr == 0.05
    assert a.use_full_data is b.use_full_data is True


def test_precedence_cli_over_yaml_over_default(tmp_path):
    cfg_file = write_config(tmp_path / "c.yml", "algo: training\nlr: 0.2\nepochs: 7\n")
    cfg = resolve(["--config", str(cfg_file), "--lr", "0.3"])
    assert cfg.lr == 0.3                      # command line wins
    assert cfg.epochs == 7                    # YAML over default
    assert cfg.momentum == 0.9                # default
    assert cfg.explicit("lr") and cfg.explicit("epochs") and not cfg.explicit("momentum")


def test_boolean_flags_bare_and_with_values():
    assert resolve(["--algo", "training", "--skip-sanity-checks"]).skip_sanity_checks is True
    for text, expected in (("false", False), ("False", False), ("0", False), ("true", True),
                           ("yes", True)):
        assert resolve(["--algo", "training", "--freeze-weights", text]).freeze_weights \
            is expected
    # a bare flag followed by another option still parses
    cfg = resolve(["--algo", "training", "--use-full-data", "--epochs", "3"])
    assert cfg.use_full_data is True and cfg.epochs == 3


def test_negative_numbers_and_lists():
    cfg = resolve(["--algo", "training", "--milestones", "80", "120", "--alpha", "-0.5",
                   "--smart-ratio", "-1"])
    assert cfg.milestones == [80, 120]
    assert cfg.alpha == -0.5
    assert cfg.smart_ratio == -1.0


def test_yaml_values_typed_and_exponent_strings(tmp_path):
    # PyYAML reads `1e-4` (no dot) as a string; numeric options still accept it.
    cfg_file = write_config(tmp_path / "c.yml",
                            "algo: training\nwd: 1e-4\nmilestones: [3, 6]\nbias: True\n"
                            "dataset: cifar10\nbn_type: null\n")
    cfg = resolve(["--config", str(cfg_file)])
    assert cfg.wd == pytest.approx(1e-4)
    assert cfg.milestones == [3, 6]
    assert cfg.bias is True
    assert cfg.dataset == "CIFAR10"           # case-insensitive choice → canonical name
    assert cfg.bn_type == "AffineBatchNorm"   # null means "the default"


def test_upstream_defaults_kept_for_upstream_keys():
    cfg = resolve(["--algo", "training"])
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.wd, cfg.momentum) == (64, 10, 0.001,
                                                                          0.0005, 0.9)
    assert (cfg.seed, cfg.seed_fixed_init, cfg.iter_period) == (42, 24, 5)
    assert cfg.target_sparsity is None    # unset: hc/hc_iter/ep use upstream's 0.5
    assert cfg.imp_rewind_iter == 1000 and cfg.fine_tune_lr == 0.01


def test_seed_times_trial_num():
    assert resolve(["--algo", "training", "--seed", "7", "--trial-num", "3"]).run_seed == 21


def test_weight_training_flag_selects_dense_training(tmp_path):
    # upstream's resnet20_wt.yml style: algo hc + weight_training True, with hc-only keys set
    cfg_file = write_config(tmp_path / "wt.yml", """
algo: 'hc'
arch: resnet20
weight_training: True
prune_rate: 0.0
regularization: var_red_2
lmbda: 0
weight_decay: 0.0001
""")
    cfg = resolve(["--config", str(cfg_file)])
    assert cfg.algo_name == "training"
    assert any("weight_decay" in w and "no effect" in w for w in cfg.warnings)
    assert any("no effect for algo 'training'" in w and "regularization" in w
               for w in cfg.warnings)


def test_legacy_keys_warn_once_each(tmp_path):
    cfg_file = write_config(tmp_path / "c.yml",
                            "algo: training\niter_ep: 3\nlog_interval: 10\ndata_dir: x\n")
    warnings = resolve(["--config", str(cfg_file)]).warnings
    for key in ("iter_ep", "log_interval", "data_dir"):
        assert sum(key in w for w in warnings) == 1


def test_duplicate_key_with_the_same_value_warns(tmp_path):
    # several upstream configs repeat a key; with the same value it keeps loading
    cfg_file = write_config(tmp_path / "c.yml", "algo: training\nlr: 0.1\nepochs: 2\nlr: 0.1\n")
    cfg = resolve(["--config", str(cfg_file)])
    assert cfg.lr == 0.1
    assert any("'lr' appears twice" in w and "line 2" in w for w in cfg.warnings)


def test_duplicate_key_with_different_values_is_refused_with_both_lines(tmp_path):
    cfg_file = write_config(tmp_path / "c.yml", "algo: snip\nlr: 0.1\nalgo: training\n")
    with pytest.raises(ConfigError, match=r"c.yml:3: key 'algo' is given twice with "
                                          r"different values \(lines 1 and 3\)"):
        resolve(["--config", str(cfg_file)])


def test_upstream_spellings_of_unset_and_unsupported_keys(tmp_path):
    cfg_file = write_config(tmp_path / "c.yml", """
algo: training
prune_rate: -1
regularization: False
score_init: all_one
optimizer: adamw
toggle_warmup: False
lr_adjust: 30
""")
    cfg = resolve(["--config", str(cfg_file)])
    assert cfg.prune_rate is None and cfg.regularization is None
    assert cfg.score_init == "all_one" and cfg.optimizer == "adamw"
    assert any("'toggle_warmup'" in w and "upstream default" in w for w in cfg.warnings)
    assert any("'lr_adjust'" in w and "no effect" in w for w in cfg.warnings)
    assert "toggle_warmup" not in cfg.yaml_values() and "lr_adjust" not in cfg.yaml_values()
    with pytest.raises(ConfigError, match="upstream feature not supported here"):
        resolve(["--algo", "training", "--toggle-warmup", "true"])


def test_upstream_distributed_keys_load(tmp_path):
    ok = write_config(tmp_path / "ok.yml", "algo: training\nmultiprocessing_distributed: false"
                                            "\nworld_size: -1\n")
    resolve(["--config", str(ok)])


def test_run_hash_ignores_operational_keys_and_defaults():
    base = resolve(["--algo", "training", "--lr", "0.1"])
    same = resolve(["--algo", "training", "--lr", "0.1", "--gpu", "1", "--workers", "9",
                    "--log-dir", "elsewhere", "--momentum", "0.9"])
    other = resolve(["--algo", "training", "--lr", "0.2"])
    assert base.run_hash() == same.run_hash() != other.run_hash()
    assert re.fullmatch(r"[0-9a-f]{8}", base.run_hash())


def test_saved_config_reproduces_the_resolved_config(tmp_path):
    cfg_file = write_config(tmp_path / "exp.yml", "algo: training\nlr: 0.1\nmilestones: [2, 4]"
                                                  "\nwd: 1e-4\n")
    cfg = resolve(["--config", str(cfg_file), "--epochs", "5", "--use-full-data"])
    saved = tmp_path / "config.yaml"
    saved.write_text(cfg.to_yaml())
    again = resolve(["--config", str(saved)])
    assert again.yaml_values() == cfg.yaml_values()
    assert again.run_hash() == cfg.run_hash()
    assert again.name == "exp"                # the original stem travels with the file


def test_no_argument_parsing_at_import():
    code = ("import sys; sys.argv = ['x', '--definitely-not-an-option']; "
            "import args_helper, main, models, data, pruners, utils.train; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_help_lists_every_option_grouped():
    out = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    for opt in OPTIONS:
        assert opt.flag in out.stdout
    for group in args_helper.GROUP_ORDER:
        assert group in out.stdout


def test_readme_option_table_is_current():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    begin, end = "<!-- options:begin -->", "<!-- options:end -->"
    assert begin in readme and end in readme
    table = readme.split(begin)[1].split(end)[0].strip()
    assert table == args_helper.markdown_table().strip(), \
        "README option table is stale: regenerate with `python args_helper.py --markdown`"


def test_every_reference_key_is_understood():
    # REFERENCE.md §2: the keys that must be understood, and the legacy no-op keys.
    understood = """algo arch dataset batch_size epochs optimizer lr lr_policy lr_gamma momentum
    wd nesterov conv_type bn_type freeze_weights init score_init scale_fan mode nonlinearity
    bias prune_type prune_rate override_prune_rate target_sparsity iter_period hc_quantized
    quantize_threshold round noise noise_ratio regularization lmbda alpha alpha_prime
    unflag_before_finetune skip_fine_tune fine_tune_optimizer fine_tune_lr fine_tune_lr_policy
    fine_tune_wd weight_training skip_sanity_checks invert_sanity_check random_subnet
    smart_ratio sr_version checkpoint_at_prune imp_rewind_iter imp_rounds imp_no_rewind seed
    trial_num fixed_init seed_fixed_init use_full_data label_smoothing mixed_precision name
    subfolder log_dir data gpu workers num_workers multiprocessing_distributed world_size rank
    dist_backend pretrained resume evaluate""".split()
    legacy = """weight_decay iter_ep num_epochs transfer_learning compare_rounding submask_size
    metric pruning_strategy how_to_prune hidden_size td temp max_iter flips log_interval
    data_dir save_plot_data start_from_nothing""".split()
    by_name = args_helper.OPTIONS_BY_NAME
    for key in understood:
        assert key in by_name and by_name[key].status != args_helper.LEGACY, key
    for key in legacy:
        assert by_name[key].status == args_helper.LEGACY, key
    assert len(understood) + len(legacy) == len(set(understood + legacy)) == 90
