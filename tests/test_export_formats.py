"""The trainer files beside an export's shards, each read by its consumer's own code: megatron-core's
IndexedDataset, get_blend_from_list and GPT dataset builder (what pretrain_gpt.py runs), NeMo 2.0's
PreTrainingDataModule where NeMo is installed, huggingface_hub's DatasetCard and `datasets`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from climb_core import cli
from climb_core.export.formats import hf_card, parse_formats, size_category
from climb_core.export.mixture import ExportError, export_search
from tests.test_export import SPREAD, SPREAD_RUN, _held_out_texts, _rows, build_searched

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    mc_indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.utils import get_blend_from_list


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    ws, sid = build_searched(root / "ws")
    out = root / "out"
    manifest = export_search(ws, sid, out, tokens=100_000, which=SPREAD_RUN)
    return ws, sid, out, manifest


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _gpt_config(ws, **blend) -> GPTDatasetConfig:
    from climb_core.pipeline.tokens import eot_id, load_tokenizer

    tok = load_tokenizer(ws)
    # What GPTDataset asks of a tokenizer: the end-of-document and pad ids, and identifiers for its cache key.
    stub = SimpleNamespace(vocab_size=tok.get_vocab_size(), eod=eot_id(tok), pad=-1,
                           unique_identifiers={"class": "workspace-tokenizer"})
    # No path_to_cache: the indices are built in memory, with no process group to coordinate a cache.
    return GPTDatasetConfig(random_seed=1234, sequence_length=64, tokenizer=stub, reset_position_ids=False,
                            reset_attention_mask=False, eod_mask_loss=False, **blend)


def test_cluster_files_are_whole_clusters_read_by_megatron(exported):
    """Each weighted cluster's .bin/.idx holds every one of its training documents once, tokenised with
    the workspace tokenizer plus its end-of-text; the sample's repeats stay in the shards."""
    from climb_core.pipeline.tokens import eot_id, load_tokenizer

    ws, _, out, manifest = exported
    trainer = manifest["trainer_data"]
    assert trainer["documents"] == "whole clusters" and trainer["tokenizer"]["dtype"] == "uint16"
    tok = load_tokenizer(ws)
    eot = eot_id(tok)
    held = _held_out_texts(ws)
    sample = _rows(out)
    n_train = dict(zip(*np.unique(np.asarray(ws.query_df(
        "SELECT cluster_id FROM token_shards WHERE split = 'train'")["cluster_id"]), return_counts=True)))
    assert len(trainer["clusters"]) == sum(w > 0 for w in SPREAD) and n_train
    for c in trainer["clusters"]:
        docs = _jsonl(out / c["jsonl"])
        ids = [d["id"] for d in docs]
        assert len(ids) == len(set(ids)) == c["docs"]  # each document once
        assert not {d["text"] for d in docs} & held
        # Every document of the cluster the sample drew from is in the whole-cluster file.
        assert set(sample[sample.cluster_id == c["cluster_id"]]["doc_id"]) <= set(ids)
        ds = mc_indexed.IndexedDataset(str(out / c["prefix"]))
        assert len(ds) == c["docs"] and int(ds.sequence_lengths.sum()) == c["tokens"]
        for i in (0, len(ds) - 1):
            assert ds[i][-1] == eot and tok.decode(ds[i][:-1].tolist()) == docs[i]["text"]
    # The shards' sample repeats a cluster where its share needs it; the trainer files never do.
    assert sum(c["docs"] for c in trainer["clusters"]) >= len(set(sample["doc_id"]))


def test_megatron_blend_builds_the_training_dataset(exported):
    """megatron-blend.txt, read as pretrain_gpt.py's --data-args-path reads it, builds megatron-core's
    blended GPT dataset with no further preprocessing, drawing the clusters by the searched weights."""
    ws, _, out, manifest = exported
    blend = get_blend_from_list((out / "megatron-blend.txt").read_text().split())
    prefixes, weights = blend
    want = {c["cluster_id"]: c["weight"] for c in manifest["trainer_data"]["clusters"]}
    total = sum(want.values())
    assert len(prefixes) == len(want) and abs(sum(weights) - 1) < 1e-9
    for p, w in zip(prefixes, weights):
        assert p.startswith(str(out)) and p.endswith("_text_document")
        cid = int(Path(p).name.removeprefix("cluster-").removesuffix("_text_document"))
        assert abs(w - want[cid] / total) < 1e-9
    assert manifest["trainer_data"]["megatron_data_path"].split() == (out / "megatron-blend.txt").read_text().split()
    n = 2000
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n, 0, 0], lambda: True,
                                                _gpt_config(ws, blend=blend, split="100,0,0")).build()
    assert len(train) == n and train[0]["tokens"].shape == (64,)
    drawn = np.bincount(train.dataset_index, minlength=len(prefixes)) / n
    assert np.allclose(drawn, weights, atol=0.01)


def test_megatron_per_split_has_held_out_validation(exported):
    """megatron-blend.json, as --per-split-data-args-path reads it: train the blend, valid the held-out
    documents (each cluster's validation text, never in training), test none."""
    ws, _, out, manifest = exported
    per_split = json.loads((out / "megatron-blend.json").read_text())
    assert per_split["test"] is None
    blends = [get_blend_from_list(per_split[s].split() if isinstance(per_split[s], str) else per_split[s])
              for s in ("train", "valid", "test")]
    valid_prefix = blends[1][0][0]
    valid = mc_indexed.IndexedDataset(valid_prefix)
    assert len(valid) == manifest["trainer_data"]["valid"]["docs"] > 0
    texts = {d["text"] for d in _jsonl(out / manifest["trainer_data"]["valid"]["jsonl"])}
    assert texts <= _held_out_texts(ws)
    train, val, test = BlendedMegatronDatasetBuilder(GPTDataset, [500, 20, None], lambda: True,
                                                     _gpt_config(ws, blend_per_split=blends)).build()
    assert len(train) == 500 and len(val) >= 20 and test is None


def test_nemo_paths(exported):
    """nemo-blend.json is the flat [weight, prefix, ...] list PreTrainingDataModule(paths=...) takes,
    nemo-blend-splits.json its per-split dict; both pass NeMo's own checks where NeMo is installed, and
    megatron-core's get_blend_from_list (which NeMo calls on them) everywhere."""
    _, _, out, manifest = exported
    flat = json.loads((out / "nemo-blend.json").read_text())
    splits = json.loads((out / "nemo-blend-splits.json").read_text())
    assert isinstance(flat, list) and all(isinstance(w, float) for w in flat[::2]) and all(isinstance(p, str) for p in flat[1::2])
    assert set(splits) == {"train", "validation", "test"} and splits["train"] == flat
    try:
        from nemo.collections.llm.gpt.data.pre_training import validate_dataset_asset_accessibility
    except ImportError:
        # NeMo's check: every prefix has its .bin and .idx beside it.
        def validate_dataset_asset_accessibility(paths):
            items = paths.values() if isinstance(paths, dict) else [paths]
            for item in items:
                for p in (item[1::2] if isinstance(item[0], float) else item):
                    assert Path(p + ".bin").exists() and Path(p + ".idx").exists(), p
    validate_dataset_asset_accessibility(flat)
    validate_dataset_asset_accessibility(splits)
    prefixes, weights = get_blend_from_list(flat)
    assert len(prefixes) == len(manifest["trainer_data"]["clusters"]) and abs(sum(weights) - 1) < 1e-9
    for split in ("validation", "test"):
        assert get_blend_from_list(splits[split]) == ([str(out / manifest["trainer_data"]["valid"]["prefix"])], None)


def test_hf_dataset_card(exported, tmp_path):
    datasets = pytest.importorskip("datasets")
    from huggingface_hub import DatasetCard

    _, sid, out, manifest = exported
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["language"] == ["en"] and data["task_categories"] == ["text-generation"]
    assert data["size_categories"] == [size_category(manifest["docs"])] and data["source_datasets"] == ["extended"]
    assert data["pretty_name"] == f"CLIMB mixture {sid}"
    assert data["configs"][0]["data_files"][0]["path"] == "part-*.parquet"
    assert "climb" not in data
    assert "source corpus" in card.text and "weights.json" in card.text and "distinct documents" in card.text
    for c in manifest["clusters"]:
        assert f"| {c['cluster_id']} | " in card.text
    # The card's configs are what `load_dataset(<folder>)` follows: the shards, not the JSONL copies.
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == manifest["docs"]


def test_card_escapes_labels_and_takes_settings(exported, tmp_path):
    from huggingface_hub import DatasetCard

    _, _, _, manifest = exported
    m = json.loads(json.dumps(manifest))
    m["clusters"][0]["label"] = "<img src=x onerror=alert(1)> | **bold**\n# heading"
    hf_card(tmp_path, m, {"license": "cc-by-4.0", "language": ["de", "fr"], "pretty_name": "My mix",
                          "source_datasets": ["extended|org/corpus"]})
    card = DatasetCard.load(tmp_path / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.language == ["de", "fr"] and card.data.pretty_name == "My mix"
    assert card.data.source_datasets == ["extended|org/corpus"]
    row = next(line for line in card.text.splitlines() if line.startswith(f"| {m['clusters'][0]['cluster_id']} |"))
    assert "<img" not in row and "&lt;img" in row and r"\| \*\*bold\*\* \# heading" in row


def test_sample_mode_writes_the_shards_sample(exported, tmp_path):
    ws, sid, _, _ = exported
    m = export_search(ws, sid, tmp_path / "s", tokens=100_000, which=SPREAD_RUN, sample=True, formats="megatron")
    assert m["trainer_data"]["documents"] == "sample"
    rows = {c["cluster_id"]: c["docs"] for c in m["clusters"] if c["docs"]}
    assert {c["cluster_id"]: c["docs"] for c in m["trainer_data"]["clusters"]} == rows
    assert all(c["distinct_docs"] <= c["docs"] for c in m["clusters"])


def test_hf_tokenizer_folder(exported, tmp_path):
    """--tokenizer DIR: a saved Hugging Face tokenizer; its ids and eos token end up in the .bin."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    ws, sid, _, _ = exported
    texts = ws.query_df("SELECT text FROM documents LIMIT 300")["text"].tolist()
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"], show_progress=False))
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", unk_token="<unk>")
    hf.save_pretrained(tmp_path / "tok")
    out = tmp_path / "hf"
    assert cli.main(["export", str(ws.root), "--search", sid, "--dataset-tokens", "20000", "--out", str(out),
                     "--formats", "megatron", "--tokenizer", str(tmp_path / "tok"), "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["trainer_data"]["tokenizer"]["eod"] == hf.eos_token_id and m["trainer_data"]["tokenizer"]["vocab_size"] == len(hf)
    c = m["trainer_data"]["clusters"][0]
    ds = mc_indexed.IndexedDataset(str(out / c["prefix"]))
    first = _jsonl(out / c["jsonl"])[0]["text"]
    assert ds[0].tolist() == hf(first, add_special_tokens=False)["input_ids"] + [hf.eos_token_id]


def test_unusable_tokenizer_and_spaced_path_are_refused(exported, tmp_path, capsys):
    ws, sid, _, _ = exported
    with pytest.raises(ExportError, match="nothing is downloaded|download"):
        export_search(ws, sid, tmp_path / "t", tokens=5000, tokenizer="no-such-org/no-such-tok")
    spaced = tmp_path / "my exports" / "mix"
    assert cli.main(["export", str(ws.root), "--search", sid, "--dataset-tokens", "5000", "--out", str(spaced)]) == 1
    err = capsys.readouterr().err
    assert str(spaced) in err and "whitespace" in err
    assert not spaced.exists()
    # Without the Megatron files nothing splits the path: the other formats are written.
    m = export_search(ws, sid, spaced, tokens=5000, formats="hf,nemo")
    assert sorted(m["formats"]) == ["hf", "nemo"] and (spaced / "nemo-blend.json").exists()


def test_cli_push_to_hub_with_a_stub(exported, tmp_path, monkeypatch, capsys):
    from climb_core.export import formats

    ws, sid, _, _ = exported
    calls = []

    class Api:
        def create_repo(self, repo_id, **kw):
            calls.append(repo_id)
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(self, folder_path, **kw):
            calls.append(sorted(p.name for p in Path(folder_path).iterdir()))

    monkeypatch.setattr(formats, "_hub_api", lambda token: Api())
    out = tmp_path / "push"
    assert cli.main(["export", str(ws.root), "--search", sid, "--dataset-tokens", "5000", "--out", str(out), "--formats", "hf",
                     "--push-to-hub", "me/mix", "--quiet"]) == 0
    assert calls[0] == "me/mix" and "README.md" in calls[1]
    assert "datasets/me/mix" in capsys.readouterr().out
    monkeypatch.undo()
    # Offline (the CLI's default), the push says how to allow it.
    assert cli.main(["export", str(ws.root), "--search", sid, "--dataset-tokens", "5000", "--out", str(out), "--formats", "hf",
                     "--push-to-hub", "me/mix", "--quiet"]) == 1
    assert "HF_HUB_OFFLINE=0" in capsys.readouterr().err


def test_formats_can_be_chosen(exported, tmp_path):
    ws, sid, _, _ = exported
    m = export_search(ws, sid, tmp_path / "none", tokens=5000, formats="none")
    assert m["formats"] == {} and m["cluster_files"] == [] and m["trainer_data"] is None
    assert sorted(p.name for p in (tmp_path / "none").iterdir() if not p.name.startswith("part-")) == [
        "manifest.json", "weights.json"]
    assert parse_formats("NeMo, hf") == ("hf", "nemo")
    with pytest.raises(ValueError, match="deepspeed"):
        parse_formats("deepspeed")
