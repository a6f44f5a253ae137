"""Level 1.5 changes the inner loop's SearchConfig only through a validated, bounded patch."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.errors import ConfigError
from domains.train_opt.config import ConfigPatch, SearchConfig, apply_patch, initial_config

PARAMS = ["DEPTH", "MATRIX_LR", "EMBEDDING_LR", "WEIGHT_DECAY", "WARMUP_RATIO", "ADAM_BETAS"]


@pytest.fixture
def config() -> SearchConfig:
    return initial_config(PARAMS, min_active=3, max_freeze_per_cycle=2)


def test_a_valid_patch_freezes_and_sets_strategy_and_guidance(config):
    new = apply_patch(config, ConfigPatch(freeze=["DEPTH", "WARMUP_RATIO"], strategy="exploit",
                                          step_scale=0.5, guidance="refine MATRIX_LR", reason="dead params"))
    assert new.frozen_params == ("DEPTH", "WARMUP_RATIO")
    assert new.active_params == ("MATRIX_LR", "EMBEDDING_LR", "WEIGHT_DECAY", "ADAM_BETAS")
    assert (new.strategy, new.step_scale, new.guidance) == ("exploit", 0.5, "refine MATRIX_LR")
    assert config.frozen_params == ()  # the old config is untouched (frozen model)


def test_a_valid_patch_unfreezes(config):
    frozen = apply_patch(config, ConfigPatch(freeze=["DEPTH"], reason="r"))
    thawed = apply_patch(frozen, ConfigPatch(unfreeze=["DEPTH"], reason="plateau"))
    assert "DEPTH" in thawed.active_params and thawed.frozen_params == ()
    assert set(thawed.active_params) == set(PARAMS)


def test_fields_left_out_of_a_patch_keep_their_values(config):
    tuned = apply_patch(config, ConfigPatch(strategy="focused", max_changes=2, reason="r"))
    again = apply_patch(tuned, ConfigPatch(reason="nothing to change"))
    assert again == tuned


def _one_line_config_error(config, patch, match):
    with pytest.raises(ConfigError, match=match) as info:
        apply_patch(config, patch)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_more_freezes_than_allowed_per_cycle_is_refused(config):
    msg = _one_line_config_error(config, ConfigPatch(freeze=["DEPTH", "MATRIX_LR", "EMBEDDING_LR"], reason="r"),
                                 "at most 2 per cycle")
    assert "3 parameters" in msg


def test_duplicate_names_count_once(config):
    new = apply_patch(config, ConfigPatch(freeze=["DEPTH", "DEPTH", "MATRIX_LR"], reason="r"))
    assert new.frozen_params == ("DEPTH", "MATRIX_LR")


def test_a_patch_may_not_leave_fewer_than_min_active(config):
    two = apply_patch(config, ConfigPatch(freeze=["DEPTH", "MATRIX_LR"], reason="r"))
    three_left = apply_patch(two, ConfigPatch(freeze=["EMBEDDING_LR"], reason="r"))
    assert len(three_left.active_params) == 3
    _one_line_config_error(three_left, ConfigPatch(freeze=["WEIGHT_DECAY"], reason="r"), "at least 3 must stay active")


def test_an_unknown_parameter_is_refused_and_named(config):
    msg = _one_line_config_error(config, ConfigPatch(freeze=["LEARNING_RATE"], reason="r"), "unknown parameter")
    assert "LEARNING_RATE" in msg
    _one_line_config_error(config, ConfigPatch(unfreeze=["NOPE"], reason="r"), "NOPE")


def test_freezing_and_unfreezing_the_same_parameter_is_refused(config):
    frozen = apply_patch(config, ConfigPatch(freeze=["DEPTH"], reason="r"))
    _one_line_config_error(frozen, ConfigPatch(freeze=["DEPTH"], unfreeze=["DEPTH"], reason="r"),
                           "both freezes and unfreezes DEPTH")


@pytest.mark.parametrize(
    "fields",
    [
        {"strategy": "random", "reason": "r"},
        {"step_scale": 10.0, "reason": "r"},
        {"max_changes": 0, "reason": "r"},
        {"guidance": "x" * 5000, "reason": "r"},
        {"reason": ""},
        {"freeze": ["DEPTH"]},  # a reason is required
        {"freeze": ["DEPTH"], "reason": "r", "delete_journal": True},  # extra fields are forbidden
    ],
    ids=["strategy", "step_scale", "max_changes", "guidance", "empty-reason", "no-reason", "extra-field"],
)
def test_an_invalid_patch_does_not_validate(fields):
    with pytest.raises(ValidationError):
        ConfigPatch.model_validate(fields)


def test_an_invalid_strategy_smuggled_past_validation_is_a_config_error(config):
    patch = ConfigPatch.model_construct(freeze=[], unfreeze=[], strategy="random", step_scale=None,
                                        max_changes=None, guidance=None, reason="r")
    _one_line_config_error(config, patch, "strategy")


def test_initial_config_refuses_bad_settings_with_a_config_error():
    with pytest.raises(ConfigError, match="invalid search configuration"):
        initial_config(PARAMS, strategy="random")
    with pytest.raises(ConfigError):
        initial_config(PARAMS, bogus=1)


def test_search_config_is_immutable(config):
    with pytest.raises(ValidationError):
        config.strategy = "exploit"  # type: ignore[misc]
