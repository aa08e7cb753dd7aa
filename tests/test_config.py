"""Configs: defaults documented, TOML/YAML round trips, overrides and errors that name the key."""

from __future__ import annotations

import dataclasses

import pytest

from climb_core.config import (ClimbConfig, ConfigError, config_from_dict, dump_toml, load_config,
                               reference_markdown, with_overrides)


def test_every_key_is_documented():
    cfg = ClimbConfig()
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            assert f.metadata.get("doc"), f"{section.name}.{f.name} has no doc"


def test_toml_round_trip_keeps_every_value(tmp_path):
    cfg = with_overrides(ClimbConfig(), {"cluster.k": 77, "search.round_split": [6, 1], "embed.model": "x/y"})
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg, with_docs=True))
    assert load_config(path) == cfg


def test_yaml_partial_file_takes_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cluster:\n  k: 12\nproxy:\n  kind: gpt\n")
    cfg = load_config(path)
    assert cfg.cluster.k == 12 and cfg.proxy.kind == "gpt"
    assert cfg.embed == ClimbConfig().embed


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[cluster]\nkk = 3\n")
    with pytest.raises(ConfigError, match="kk"):
        load_config(path)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="cluster.k"):
        config_from_dict({"cluster": {"k": "many"}})
    with pytest.raises(ConfigError, match="search.nope"):
        with_overrides(ClimbConfig(), {"search.nope": 1})


def test_string_overrides_are_coerced():
    cfg = with_overrides(ClimbConfig(), {"cluster.k": "50", "ingest.dedup": "false", "search.round_split": "2,2,1"})
    assert cfg.cluster.k == 50 and cfg.ingest.dedup is False and cfg.search.round_split == [2, 2, 1]


def test_reference_lists_every_section():
    text = reference_markdown()
    for section in dataclasses.fields(ClimbConfig):
        assert f"## [{section.name}]" in text


def test_docs_config_reference_is_current(repo_root):
    """docs/CONFIG.md is generated; regenerate with `climb config --reference > docs/CONFIG.md`."""
    assert (repo_root / "docs" / "CONFIG.md").read_text() == reference_markdown() + "\n"
