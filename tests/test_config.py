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


def test_config_of_an_older_search_with_a_retired_key_loads():
    """A catalogue's stored config may hold keys since removed (search.pool_min): they are dropped."""
    old = ClimbConfig().to_dict()
    old["search"]["pool_min"] = 128
    cfg = config_from_dict(old)
    assert not hasattr(cfg.search, "pool_min")
    assert cfg == ClimbConfig()
    with pytest.raises(ConfigError, match="pool_mix"):   # a misspelt key is still refused
        config_from_dict({"search": {"pool_mix": 1}})


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


def test_emoji_name_round_trips_through_save_and_load(tmp_path):
    """Characters outside the BMP must be written as TOML reads them (JSON's surrogate pairs are not)."""
    from climb_core.config import save_config

    cfg = with_overrides(ClimbConfig(), {"search.name": "🚀 search", "study.name": "naïve \"quoted\" \\ tab\t"})
    path = tmp_path / "c.toml"
    save_config(cfg, path)
    assert "🚀 search" in path.read_text(encoding="utf-8")
    assert load_config(path) == cfg
    (tmp_path / "d.toml").write_text(dump_toml(cfg, with_docs=True), encoding="utf-8")
    assert load_config(tmp_path / "d.toml") == cfg


def test_long_target_list_round_trips(tmp_path):
    """tomli-w writes a long list of targets as [[target.specs]] tables; keys written after them would
    land inside the last table, so they must come last in their section."""
    cfg = ClimbConfig()
    cfg.target.specs = cfg.target.specs * 3
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg, with_docs=True), encoding="utf-8")
    assert load_config(path) == cfg


def test_a_file_layered_on_a_base_keeps_the_keys_it_leaves_out(tmp_path):
    base = with_overrides(ClimbConfig(), {"cluster.k": 40, "cluster.niter": 7, "ingest.paths": ["/data/a.jsonl"]})
    path = tmp_path / "partial.toml"
    path.write_text("[cluster]\nniter = 50\n[ingest]\ntext_field = \"body\"\n")
    cfg = load_config(path, base=base)
    assert cfg.cluster.niter == 50 and cfg.ingest.text_field == "body"
    assert cfg.cluster.k == 40 and cfg.ingest.paths == ["/data/a.jsonl"]  # same tables, other keys kept
    assert cfg.search == base.search


def test_layer_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[cluster]\nk = \"many\"\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: cluster\.k"):
        load_config(path, base=ClimbConfig())


def test_choices_agree_with_the_engine():
    """config.py declares the strategies and predictors without importing the search engine."""
    from climb_core import config
    from climb_core.search import PREDICTORS, STRATEGIES
    from climb_core.search.acquisition import ACQUISITIONS
    from climb_core.search.sampling import DESIGNS

    assert config.STRATEGIES == STRATEGIES and config.PREDICTORS == PREDICTORS
    search = {f.name: f.metadata["check"] for f in dataclasses.fields(config.SearchConfig)}
    assert search["acquisition"]["choices"] == ACQUISITIONS and search["initial_design"]["choices"] == DESIGNS


def test_defaults_are_valid_and_every_number_has_a_range():
    from climb_core.config import TargetSpec, validate

    validate(ClimbConfig())
    for cls in [type(getattr(ClimbConfig(), f.name)) for f in dataclasses.fields(ClimbConfig)] + [TargetSpec]:
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float", int, float):
                check = f.metadata.get("check", {})
                assert {"ge", "gt"} & set(check), f"{cls.__name__}.{f.name} declares no lower bound"
