"""Config fields: choices come from Literal types (CLI and TOML alike); boundary types behave as documented."""

from __future__ import annotations

import argparse
import typing

import pytest

from verity.algos.losses import LOSS_TYPES
from verity.cli.derive import add_dataclass_args, build_config
from verity.config import check_choices, choices_of
from verity.errors import ConfigError
from verity.train.batching import epoch_order
from verity.train.config import RLConfig
from verity.types import Group, Rollout


def _parser(cls: type) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_dataclass_args(p, cls)
    return p


def test_cli_choices_are_read_from_the_literal_type():
    hints = typing.get_type_hints(RLConfig)
    assert choices_of(hints["loss"]) == LOSS_TYPES == ("grpo", "dapo", "dr_grpo", "gspo")
    actions = {a.dest: a for a in _parser(RLConfig)._actions}
    assert tuple(actions["loss"].choices) == LOSS_TYPES
    assert tuple(actions["scale_rewards"].choices) == ("group", "batch", "none")
    assert actions["lr"].choices is None


def test_a_toml_value_outside_the_choices_is_an_error_naming_the_flag(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('scale_rewards = "median"\n')
    argv = ["--config", str(f)]
    ns = _parser(RLConfig).parse_args(argv)
    with pytest.raises(ConfigError, match=r"scale_rewards = 'median' is not one of group, batch, none"):
        build_config(RLConfig, ns, argv)


def test_check_choices_on_library_configs():
    check_choices(RLConfig())
    with pytest.raises(ConfigError, match="--advantage ppo"):
        check_choices(RLConfig(advantage="ppo"))  # type: ignore[arg-type]


def _rollout(reward: float) -> Rollout:
    return Rollout(example_id=0, rollout_idx=0, prompt=(), completion=(), answer="", info={}, task="t",
                   scores={}, reward=reward)


def test_group_has_signal_only_when_rewards_differ():
    assert Group(0, (_rollout(1.0), _rollout(0.0))).has_signal
    assert not Group(0, (_rollout(0.5), _rollout(0.5), _rollout(0.5 + 1e-12))).has_signal
    assert not Group(0, ()).has_signal


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(10, 3, 0)
    assert sorted(a) == list(range(10))
    assert epoch_order(10, 3, 0) == a
    assert epoch_order(10, 3, 1) != a and epoch_order(10, 4, 0) != a


def test_presets_are_toml_files_loaded_by_name_or_path(tmp_path):
    from verity.config import from_preset, preset_names

    assert "demo" in preset_names()
    cfg = from_preset(RLConfig, "demo", steps=3)
    assert (cfg.env, cfg.loss, cfg.scale_rewards, cfg.steps) == ("pii-masking", "dr_grpo", "none", 3)
    f = tmp_path / "p.toml"
    f.write_text('loss = "dapo"\nlora_rnk = 4\n')
    with pytest.raises(ConfigError, match=r"preset .*p.toml: unknown key\(s\) lora_rnk for RLConfig"):
        from_preset(RLConfig, str(f))
    f.write_text('loss = "ppo"\n')
    with pytest.raises(ConfigError, match=r"--loss ppo: unknown loss"):
        from_preset(RLConfig, str(f))
    with pytest.raises(ConfigError, match=r"--config demo2: file not found \(shipped presets: demo"):
        from_preset(RLConfig, "demo2")
