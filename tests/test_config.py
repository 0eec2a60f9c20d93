"""The typed config: one field per option, checked in one message form, the command line made from it."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from imgclf import config
from imgclf.cli import build_parser
from imgclf.config import DataConfig, StudyConfig, TrainConfig, merge
from imgclf.errors import ConfigError, RunError


def _parse(*argv):
    return build_parser().parse_args(list(argv))


def test_every_option_has_help_and_a_check():
    for cls in (DataConfig, TrainConfig, StudyConfig):
        for f in dataclasses.fields(cls):
            if f.name == "data":
                continue
            spec = config.spec_of(f)
            assert spec is not None, f"{cls.__name__}.{f.name} is not an option()"
            assert spec.help and spec.allowed, f"{cls.__name__}.{f.name}"


def test_the_defaults_pass_their_own_checks():
    cfg = TrainConfig().validate()
    assert cfg.epochs == 10 and cfg.data.validation == 0.2 and cfg.data.seed == cfg.seed == config.DEFAULT_SEED
    assert StudyConfig().validate().tune_trials == 50


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"epochs": 2.5}, "epochs must be an integer >= 1, got 2.5"),
    ({"epochs": True}, "epochs must be an integer >= 1, got True"),
    ({"learning_rate": 0}, "learning rate must be a number in (0, 10), got 0"),
    ({"weight_decay": 1.5}, "weight decay must be a number in [0, 1) (or none), got 1.5"),
    ({"optimizer": "lion"}, "unknown optimizer 'lion': optimizer must be one of: adam, adamw, sgd, rmsprop"),
    ({"track": "wandb"}, "unknown track ['wandb']"),
    ({"validation": 1.0}, "validation must be a number in [0, 1), got 1.0"),
    ({"fit": "squash"}, "unknown fit 'squash': fit must be one of: crop, stretch, pad"),
    ({"classes": 3}, "classes must be a comma-separated list of names (or none), got 3"),
])
def test_a_bad_value_is_said_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        merge(None, overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_an_unknown_option_is_named():
    with pytest.raises(ConfigError, match="unexpected option 'epoch'"):
        merge(None, {"epoch": 3})


def test_values_are_normalised_in_one_place():
    cfg = merge(None, {"weights": "None", "track": "tensorboard, mlflow", "classes": "b,a", "seed": 7})
    assert cfg.weights is None
    assert cfg.track == ["tensorboard", "mlflow"]
    assert cfg.data.classes == ["b", "a"]
    assert cfg.seed == 7 and cfg.data.seed == 7  # the seed given once seeds the splits too


def test_a_config_round_trips_through_json(tmp_path):
    cfg = merge(None, {"model": "cnn", "epochs": 3, "weight_decay": 0.01, "fit": "pad", "classes": ["x", "y"]})
    text = json.dumps(cfg.to_dict())
    again = TrainConfig.from_dict(json.loads(text))
    assert again == cfg


def test_a_config_written_before_new_data_fields_still_loads():
    old = TrainConfig().to_dict()
    for name in ("classes", "min_images", "splits", "data_path", "cache"):
        del old["data"][name]
    cfg = TrainConfig.from_dict(old)
    assert cfg.data.min_images == 1 and cfg.data.classes is None


def test_a_hand_edited_config_is_a_run_error():
    d = TrainConfig().to_dict()
    d["epochz"] = 3
    with pytest.raises(RunError, match="unknown option 'epochz'"):
        TrainConfig.from_dict(d, where="runs/x/config.json")


def test_the_command_line_is_made_from_the_fields():
    args = _parse("train", "data", "-m", "cnn", "--epochs", "3", "--lr", "0.01", "--weight-decay", "0.02",
                  "--no-calibrate", "--no-feature-cache", "--seed", "5", "--fit", "pad", "--cache", "memory",
                  "--classes", "a,b", "--track", "tensorboard")
    cfg = config.from_args(args)
    assert (cfg.model, cfg.epochs, cfg.learning_rate, cfg.weight_decay) == ("cnn", 3, 0.01, 0.02)
    assert cfg.calibrate is False and cfg.feature_cache is False
    assert cfg.seed == 5 and cfg.data.seed == 5
    assert (cfg.data.source, cfg.data.fit, cfg.data.cache_mode, cfg.data.classes) == ("data", "pad", "memory",
                                                                                      ["a", "b"])
    assert cfg.track == ["tensorboard"]


def test_options_not_given_keep_the_config_defaults():
    cfg = config.from_args(_parse("train", "data", "-m", "cnn"))
    assert cfg == merge(None, {"model": "cnn", "source": "data"})


def test_a_choice_the_parser_does_not_know_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as e:
        _parse("train", "data", "-m", "cnn", "--optimizer", "lion")
    assert e.value.code == 2
    assert "invalid choice: 'lion'" in capsys.readouterr().err


def test_help_shows_each_default():
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--weight-decay" in text and "(default 0.01)" in text and "(default on)" in text
    assert "--lr" in text


def test_a_study_offers_the_shared_training_options_with_its_own_defaults():
    args = _parse("study", "data", "--weight-decay", "0.01", "--models", "cnn,mobilenet_v2")
    cfg = config.from_args(args, base=TrainConfig(epochs=config.STUDY_EPOCHS))
    assert cfg.epochs == config.STUDY_EPOCHS and cfg.weight_decay == 0.01
    assert config.StudyConfig(**config.given(args, StudyConfig)).validate().models == ["cnn", "mobilenet_v2"]
    demo = _parse("demo")
    assert demo.epochs == 10 and demo.image_size == 96


def test_transfer_only_options_are_marked_on_their_field():
    assert {"fine_tune", "hidden_units", "weights", "views"} <= set(config.TRANSFER_ONLY)
    assert "epochs" not in config.TRANSFER_ONLY


def test_a_new_option_is_one_field():
    """A field added to the config is on the command line, checked, and saved, with no other edit."""
    Extended = dataclasses.make_dataclass(
        "Extended", [("warmup", int, config.option(3, "warm-up epochs", config.Interval(int, 0)))],
        bases=(TrainConfig,))
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, Extended)
    args = parser.parse_args(["--warmup", "5"])
    assert config.given(args, Extended)["warmup"] == 5
    assert "warm-up epochs (default 3)" in parser.format_help()
    with pytest.raises(ConfigError, match="warmup must be an integer >= 0, got -1"):
        Extended(warmup=-1).validate()
    assert Extended(warmup=2).to_dict()["warmup"] == 2


@pytest.mark.slow
def test_an_option_given_on_the_command_line_reaches_the_optimizer_and_config_json(cli, class_tree, tmp_path):
    import imgclf
    from imgclf.training.trainer import _optimizer

    out = tmp_path / "run"
    code, stdout, err = cli("train", class_tree, "-m", "cnn", "--epochs", "1", "--image-size", "32",
                            "--weight-decay", "0.02", "--optimizer", "adamw", "-o", out, "-q")
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["weight_decay"] == 0.02 and saved["optimizer"] == "adamw"
    cfg = imgclf.load(out).config
    assert _optimizer(cfg, cfg.learning_rate).weight_decay == pytest.approx(0.02)
