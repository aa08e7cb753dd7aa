"""The trainer files beside an export's shards: Megatron-LM and NeMo blends, and the HF dataset card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from climb_core.export.formats import parse_formats
from climb_core.export.mixture import export_search
from tests.test_export import SPREAD_RUN, build_searched


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    ws, sid = build_searched(root / "ws")
    out = root / "out"
    manifest = export_search(ws, sid, out, tokens=100_000, which=SPREAD_RUN)
    return ws, sid, out, manifest


def _expected(manifest) -> dict[int, float]:
    """The searched weights of the clusters that received documents, renormalised to sum to 1."""
    kept = {c["cluster_id"]: c["weight"] for c in manifest["clusters"] if c["docs"] > 0}
    return {cid: w / sum(kept.values()) for cid, w in kept.items()}


def _check_blend(pairs: list[tuple[float, str]], manifest, out: Path) -> None:
    want = _expected(manifest)
    assert abs(sum(w for w, _ in pairs) - 1) < 1e-9
    assert len(pairs) == len(want)
    for w, path in pairs:
        assert path.startswith(str(out)) and path.endswith("_text_document")
        cid = int(Path(path).name.removeprefix("cluster-").removesuffix("_text_document"))
        assert abs(w - want[cid]) < 1e-9
        # The preprocess input the prefix is made from holds that cluster's sampled documents.
        lines = Path(path.removesuffix("_text_document") + ".jsonl").read_text(encoding="utf-8").splitlines()
        docs = [json.loads(x) for x in lines]
        assert len(docs) == next(c["docs"] for c in manifest["clusters"] if c["cluster_id"] == cid)
        assert all(d["text"] for d in docs)


def test_megatron_blend(exported):
    _, _, out, manifest = exported
    tokens = (out / "megatron-blend.txt").read_text().split()
    # What --data-args-path does with the file: whitespace-split "weight prefix weight prefix ...".
    assert len(tokens) % 2 == 0
    _check_blend([(float(w), p) for w, p in zip(tokens[::2], tokens[1::2])], manifest, out)
    per_split = json.loads((out / "megatron-blend.json").read_text())
    assert per_split["valid"] is None and per_split["test"] is None
    train = per_split["train"]
    _check_blend([(float(w), p) for w, p in zip(train[::2], train[1::2])], manifest, out)
    assert manifest["formats"]["megatron"] == ["megatron-blend.txt", "megatron-blend.json"]


def test_nemo_blend(exported):
    _, _, out, manifest = exported
    blend = json.loads((out / "nemo-blend.json").read_text())
    assert all({"weight", "path"} <= set(e) for e in blend)
    _check_blend([(e["weight"], e["path"]) for e in blend], manifest, out)


def test_hf_dataset_card(exported, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, sid, out, manifest = exported
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n", 2)[1])
    assert front["configs"][0]["data_files"][0]["path"] == "part-*.parquet"
    climb = front["climb"]
    assert climb["search_id"] == sid and climb["strategy"] == manifest["strategy"] == "random"
    assert climb["target"] == manifest["target"] and "score" in climb["scores"]
    mix = climb["mixture"]
    assert abs(sum(c["weight"] for c in mix) - 1) < 1e-9
    assert [(c["cluster_id"], c["label"], c["weight"]) for c in mix] == [
        (c["cluster_id"], c["label"], c["weight"]) for c in manifest["clusters"]]
    body = text.split("---\n", 2)[2]
    assert sid in body and "random" in body
    for c in manifest["clusters"]:
        assert f"| {c['cluster_id']} | {c['label']} | {c['weight']:.4f} |" in body
    # The card's configs are what `load_dataset(<folder>)` follows: the shards, not the JSONL copies.
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == manifest["docs"]


def test_formats_can_be_chosen(exported, tmp_path):
    ws, sid, _, _ = exported
    m = export_search(ws, sid, tmp_path / "none", tokens=5000, formats="none")
    assert m["formats"] == {} and m["cluster_files"] == []
    assert sorted(p.name for p in (tmp_path / "none").iterdir() if not p.name.startswith("part-")) == [
        "manifest.json", "weights.json"]
    assert parse_formats("NeMo, hf") == ("hf", "nemo")
    with pytest.raises(ValueError, match="deepspeed"):
        parse_formats("deepspeed")
