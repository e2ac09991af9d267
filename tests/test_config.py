"""Config tree: validation errors name the key and the allowed values; overrides; starter config."""

from __future__ import annotations

import pytest
import yaml

from edge_distill.config import Config, config_from_dict, load_config
from edge_distill.errors import ConfigError
from edge_distill.starter import starter_text, write_starter_config


def test_defaults_are_valid_and_roundtrip_through_yaml():
    cfg = Config()
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "train.learning_rate" in str(e.value) and "unknown key" in str(e.value)
    assert str(p) in str(e.value)


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"objective": "dpo"}})
    msg = str(e.value)
    assert "train.objective" in msg and "sft, cascod, edit" in msg and "'dpo'" in msg
    with pytest.raises(ConfigError, match=r"teacher\.backend: .*one of recorded, http, llamacpp"):
        config_from_dict({"teacher": {"backend": "openai"}})
    with pytest.raises(ConfigError, match=r"data\.train_format: .*one of auto, jsonl, json"):
        config_from_dict({"data": {"train_format": "tsv"}})
    with pytest.raises(ConfigError, match=r"methods\.1: .*one of siked, fdd"):
        config_from_dict({"methods": ["siked", "dpo"]})


def test_bad_number_is_named():
    with pytest.raises(ConfigError, match=r"train\.lr"):
        config_from_dict({"train": {"lr": -1}})


def test_overrides_parse_yaml_values(tmp_path):
    cfg = load_config(None, ["train.lr=1e-4", "teacher.strategies=[cot,pot]", "name=x", "eval.limit=5"])
    assert cfg.train.lr == 1e-4 and cfg.name == "x" and cfg.eval.limit == 5
    assert [s.value for s in cfg.teacher.strategies] == ["cot", "pot"]


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\ntrain: [\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(p)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_starter_config_covers_every_key_with_default_values():
    starter = yaml.safe_load(starter_text())
    defaults = Config().model_dump(mode="json")

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(starter) == keys(defaults)
    starter["name"] = defaults["name"]
    assert config_from_dict(starter).model_dump(mode="json") == defaults


def test_write_starter_refuses_to_clobber(tmp_path):
    p = tmp_path / "s.yaml"
    write_starter_config(p)
    with pytest.raises(ConfigError, match="--force"):
        write_starter_config(p)
    write_starter_config(p, force=True)
