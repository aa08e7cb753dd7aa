"""Bad input of every kind is refused with a message that names the file, line or key, never a traceback.

Each case runs the real `climb` entry point (in-process; a few through a subprocess) and asserts:
exit code 1 (2 for argparse usage errors), the expected words on stderr, no "Traceback", and nothing
created where nothing should be (no search row, climb.toml unchanged). Corpus files with damaged
records instead succeed and leave a `rejected` row naming the reason. The number of cases is printed.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from climb_core import cli
from climb_core.catalogue.workspace import Workspace
from tests.helpers import build_domain_workspace, demo_rows

REPO = Path(__file__).resolve().parents[1]
MC_OK = {"context": "The sky is", "choices": ["blue", "green"], "label": 0}


@dataclass
class Case:
    id: str
    argv: list[str]           # {ws}, {files}, {cfg} are filled in
    expect: str               # words stderr must hold (empty: any message)
    rc: int = 1
    files: dict[str, bytes] | None = None   # written under {files} before the run


def _mc(*items, raw: bytes | None = None) -> bytes:
    return raw if raw is not None else b"".join(json.dumps(i).encode() + b"\n" for i in items)


MC_FILES = {
    "bad_json": (_mc(raw=json.dumps(MC_OK).encode() + b"\n{oops\n"), "bad_json.jsonl:2: not valid JSON"),
    "one_choice": (_mc({**MC_OK, "choices": ["blue"]}), "one_choice.jsonl:1: 'choices' must be a list of at least two"),
    "no_choices": (_mc({"context": "x", "label": 0}), "no_choices.jsonl:1: 'choices'"),
    "choice_not_str": (_mc({**MC_OK, "choices": ["a", 3]}), "choice_not_str.jsonl:1: 'choices'"),
    "label_range": (_mc({**MC_OK, "label": 5}), "label_range.jsonl:1: 'label' must be an integer index into 'choices' (0 to 1), got 5"),
    "label_negative": (_mc({**MC_OK, "label": -1}), "label_negative.jsonl:1: 'label'"),
    "label_true": (_mc({**MC_OK, "label": True}), "label_true.jsonl:1: 'label' must be an integer index into 'choices' (0 to 1), got True"),
    "label_string": (_mc({**MC_OK, "label": "0"}), "label_string.jsonl:1: 'label'"),
    "label_float": (_mc({**MC_OK, "label": 0.5}), "label_float.jsonl:1: 'label'"),
    "label_missing": (_mc({"context": "x", "choices": ["a", "b"]}), "label_missing.jsonl:1: 'label'"),
    "second_line_bad": (_mc(MC_OK, {**MC_OK, "label": 2}), "second_line_bad.jsonl:2: 'label'"),
    "empty": (b"", "empty.jsonl holds no items"),
    "blank_lines": (b"\n  \n\n", "blank_lines.jsonl holds no items"),
    "not_utf8": (b'{"context": "\xff\xfe", "choices": ["a", "b"], "label": 0}\n', "not_utf8.jsonl:1: not UTF-8 (byte 0xff"),
    "array_line": (b"[1, 2]\n", "array_line.jsonl:1: expected a JSON object"),
    "number_line": (b"42\n", "number_line.jsonl:1: expected a JSON object"),
}

SEARCH_TARGETS = [
    Case("mc_missing", ["search", "{ws}", "--target", "mc:/nonexistent.jsonl"], "/nonexistent.jsonl does not exist"),
    Case("mc_relative_missing", ["search", "{ws}", "--target", "mc:nowhere/x.jsonl"], "'nowhere/x.jsonl' not found"),
    Case("mc_folder", ["search", "{ws}", "--target", "mc:{files}"], "cannot read the target file"),
    *[Case(f"mc_{name}", ["search", "{ws}", "--target", f"mc:{{files}}/{name}.jsonl"], words, files={f"{name}.jsonl": data})
      for name, (data, words) in MC_FILES.items()],
    Case("metric_bogus", ["search", "{ws}", "--target", "arc_easy,metric=bogus"], "metric 'bogus' is not valid for a mc target: valid one of acc, acc_norm, loglik"),
    Case("metric_flag_bogus", ["search", "{ws}", "--target", "piqa", "--metric", "bogus"], "metric 'bogus'"),
    Case("text_metric_acc", ["search", "{ws}", "--target", "text:cluster:0,metric=acc"], "valid one of neg_bpb"),
    Case("weight_abc", ["search", "{ws}", "--target", "arc_easy,weight=abc"], "weight='abc' is not a number"),
    Case("weight_negative", ["search", "{ws}", "--target", "arc_easy,weight=-1"], "target.specs[0].weight = -1.0 is out of range: valid >= 0"),
    Case("weight_nan", ["search", "{ws}", "--target", "arc_easy,weight=nan"], "target.specs[0].weight = nan is not a finite number"),
    Case("weight_inf", ["search", "{ws}", "--target", "arc_easy,weight=inf"], "not a finite number"),
    Case("weights_zero", ["search", "{ws}", "--target", "arc_easy,weight=0"], "weights must sum to more than 0"),
    Case("max_items_abc", ["search", "{ws}", "--target", "arc_easy,max_items=x"], "max_items='x' is not an integer"),
    Case("max_items_negative", ["search", "{ws}", "--target", "arc_easy,max_items=-5"], "max_items = -5 is out of range"),
    Case("unknown_bundled", ["search", "{ws}", "--target", "arc_challenge"], "no bundled eval set of that name; known: arc_easy"),
    Case("same_name_twice", ["search", "{ws}", "--target", "arc_easy", "--target", "arc_easy"], "target names must differ"),
    Case("cluster_missing", ["search", "{ws}", "--target", "text:cluster:9999"], "cluster 9999 is not an active cluster; active clusters: 0, 1"),
    Case("cluster_not_int", ["search", "{ws}", "--target", "text:cluster:abc"], "'abc' is not a cluster id"),
    Case("query_syntax", ["search", "{ws}", "--target", "text:query:text ILIKE"], "is not a valid predicate over documents"),
    Case("query_unknown_column", ["search", "{ws}", "--target", "text:query:nope = 1"], "is not a valid predicate"),
    Case("query_two_statements", ["search", "{ws}", "--target", "text:query:1=1); DROP TABLE documents; SELECT (1"], "not further statements"),
    Case("query_no_match", ["search", "{ws}", "--target", "text:query:doc_id = 'no-such-doc'"], "matches no document"),
    Case("text_missing", ["search", "{ws}", "--target", "text:/nonexistent.txt"], "/nonexistent.txt does not exist"),
    Case("text_not_utf8", ["search", "{ws}", "--target", "text:{files}/t.txt"], "t.txt: not UTF-8", files={"t.txt": b"caf\xe9 au lait\n"}),
    Case("text_empty", ["search", "{ws}", "--target", "text:{files}/e.txt"], "e.txt has no text", files={"e.txt": b"\n\n"}),
    Case("text_jsonl_no_text", ["search", "{ws}", "--target", "text:{files}/t.jsonl"], "t.jsonl:1: expected a JSON object with a string 'text'", files={"t.jsonl": b'{"body": "x"}\n'}),
    Case("text_jsonl_bad_json", ["search", "{ws}", "--target", "text:{files}/t.jsonl"], "t.jsonl:2: not valid JSON", files={"t.jsonl": b'{"text": "x"}\n{\n'}),
]

SEARCH_FLAGS = [
    ("--proxy", "bogus", "proxy.kind = 'bogus' is not valid: valid one of ngram, gpt"),
    ("--proxy-tokens", "-100", "proxy.tokens = -100 is out of range: valid >= 1"),
    ("--proxy-tokens", "0", "proxy.tokens = 0"),
    ("--budget", "0", "search.budget = 0"),
    ("--budget", "-1", "search.budget = -1"),
    ("--rounds", "-1", "search.rounds = -1"),
    ("--round-split", "4,0,1", "search.round_split[1] = 0"),
    ("--round-split", "a,b", "search.round_split[0]: expected an integer, got 'a'"),
    ("--workers", "0", "search.workers = 0"),
    ("--executor", "bogus", "search.executor = 'bogus' is not valid: valid one of auto, local, process, ray"),
    ("--strategy", "bogus", "search.strategy = 'bogus'"),
    ("--predictor", "bogus", "search.predictor = 'bogus'"),
    ("--acquisition", "bogus", "search.acquisition = 'bogus'"),
    ("--initial-design", "bogus", "search.initial_design = 'bogus'"),
    ("--verify-seeds", "-1", "search.verify_seeds = -1"),
    ("--temperature", "-1", "mixture.temperature = -1.0 is out of range: valid >= 0"),
    ("--temperature", "nan", "mixture.temperature = nan is not a finite number"),
    ("--temperature", "inf", "mixture.temperature = inf is not a finite number"),
    ("--cap-multiple", "-1", "mixture.cap_multiple = -1.0 is out of range"),
    ("--cap-multiple", "nan", "mixture.cap_multiple = nan"),
    ("--min-weight", "-0.1", "mixture.min_weight = -0.1"),
    ("--min-weight", "1.5", "mixture.min_weight = 1.5 is out of range: valid >= 0 and < 1"),
    ("--max-epochs", "-1", "mixture.max_epochs = -1.0"),
    ("--final-tokens", "-1", "mixture.final_tokens = -1"),
    ("--pin", "3=2", "mixture.pinned[0] = '3=2': the weight must be a number in [0, 1]"),
    ("--pin", "abc", "mixture.pinned[0] = 'abc' is not valid: valid CLUSTER_ID=WEIGHT"),
    ("--exclude", "-1", "mixture.excluded[0] = -1"),
    ("--exclude", "x", "mixture.excluded[0]: expected an integer, got 'x'"),
    ("--n-layer", "0", "proxy.n_layer = 0"),
    ("--n-embd", "0", "proxy.n_embd = 0"),
    ("--n-embd", "130", "proxy.n_embd 130 must be a multiple of proxy.n_head 4"),
    ("--proxy-device", "tpu", "proxy.device = 'tpu' is not valid: valid auto, cpu, cuda or cuda:N"),
    ("--vocab-size", "10", "tokenizer.vocab_size = 10 is out of range: valid >= 257"),
    ("--seed", "-1", "search.seed = -1"),
]

SETS = [
    ("search.budget=1e400", "search.budget: expected an integer, got '1e400'"),
    ("search.budget=abc", "search.budget: expected an integer, got 'abc'"),
    ("search.budget=1.5", "search.budget: expected an integer"),
    ("search.budget=99999999999999999999", "search.budget = 99999999999999999999 is too large for a 64-bit integer"),
    ("search.nope=1", "unknown setting 'search.nope'"),
    ("nosection", "--set expects SECTION.KEY=VALUE"),
    ("cluster.k=-3", "cluster.k = -3 is out of range: valid >= 0"),
    ("mixture.cap_multiple=nan", "mixture.cap_multiple = nan is not a finite number"),
    ("proxy.kind=bogus", "proxy.kind = 'bogus'"),
    ("proxy.learning_rate=0", "proxy.learning_rate = 0.0 is out of range: valid > 0"),
    ("proxy.ngram_discount=1", "proxy.ngram_discount = 1.0 is out of range: valid > 0 and < 1"),
    ("ingest.dedup=maybe", "ingest.dedup: expected true/false, got 'maybe'"),
    ("predictor.gp_eps=0", "predictor.gp_eps[0] = 0.0 is out of range: valid > 0"),
    ("predictor.gp_eps=", "predictor.gp_eps is empty"),
    ("predictor.cv_folds=1", "predictor.cv_folds = 1"),
    ("predictor.bagging_fraction=1.5", "predictor.bagging_fraction = 1.5"),
    ("mixture.min_concentration=10", "mixture.min_concentration 10.0 is above mixture.max_concentration 5.0"),
    ("study.strategies=climb,bogus", "study.strategies[1] = 'bogus' is not valid"),
    ("study.strategies=", "study.strategies is empty"),
    ("tokenizer.val_fraction=0", "tokenizer.val_fraction = 0.0"),
    ("embed.dtype=int8", "embed.dtype = 'int8' is not valid: valid one of float16, float32"),
    ("ingest.memory_limit=lots", "ingest.memory_limit = 'lots' is not valid: valid empty or a size such as 256MB"),
    ("quality.scorer=not a scorer", "quality.scorer = 'not a scorer' is not valid: valid empty or module:function"),
    ("search.name=a\udcff", "search.name = 'a\\udcff' holds bytes that are not valid UTF-8"),
    ("search.na\udcffme=1", "holds bytes that are not valid UTF-8"),
    ("export.tokens=0", "export.tokens = 0"),
]

STAGE_FLAGS = [
    (["cluster", "{ws}", "--k", "-3"], "cluster.k = -3 is out of range: valid >= 0"),
    (["cluster", "{ws}", "--niter", "0"], "cluster.niter = 0 is out of range: valid >= 1"),
    (["cluster", "{ws}", "--sample-size", "-1"], "cluster.sample_size = -1"),
    (["cluster", "{ws}", "--backend", "gpu"], "cluster.backend = 'gpu'"),
    (["describe", "{ws}", "--n-keywords", "-1"], "describe.n_keywords = -1"),
    (["map", "{ws}", "--n-neighbors", "0"], "map.n_neighbors = 0 is out of range: valid >= 2"),
    (["map", "{ws}", "--n-neighbors", "1"], "map.n_neighbors = 1"),
    (["map", "{ws}", "--max-points", "0"], "map.max_points = 0"),
    (["map", "{ws}", "--map-backend", "tsne"], "map.backend = 'tsne'"),
    (["refine", "{ws}", "--min-size", "-1"], "prune.min_size = -1"),
    (["refine", "{ws}", "--min-quality", "2"], "prune.min_quality = 2.0 is out of range: valid >= 0 and <= 1"),
    (["refine", "{ws}", "--target-clusters", "-1"], "merge.target_clusters = -1"),
    (["refine", "{ws}", "--distance-threshold", "-1"], "merge.distance_threshold = -1.0"),
    (["embed", "{ws}", "--embed-batch-size", "0"], "embed.batch_size = 0"),
    (["embed", "{ws}", "--max-seq-length", "0"], "embed.max_seq_length = 0"),
    (["embed", "{ws}", "--device", "tpu"], "embed.device = 'tpu'"),
    (["ingest", "{ws}", "--batch-size", "0"], "ingest.batch_size = 0"),
    (["ingest", "{ws}", "--format", "xml"], "ingest.format = 'xml'"),
    (["ingest", "{ws}", "--text-field", ""], "ingest.text_field = '' is empty"),
    (["tokens", "{ws}", "--vocab-size", "0"], "tokenizer.vocab_size = 0"),
]

CONFIG_FILES = [
    ("not_utf8.toml", b"[search]\nname = \"caf\xe9\"\n", "not_utf8.toml: not UTF-8 text (byte 0xe9"),
    ("bad.toml", b"[search\nbudget = 3\n", "bad.toml: cannot parse"),
    ("bad.yaml", b"search: [unclosed\n", "bad.yaml: cannot parse"),
    ("list.yaml", b"- 1\n- 2\n", "list.yaml: top level must be a table"),
    ("huge.toml", b"[search]\nbudget = 1e400\n", "huge.toml: search.budget: inf is too large for an integer"),
    ("budget_str.toml", b"[search]\nbudget = \"abc\"\n", "budget_str.toml: search.budget: expected an integer, got 'abc'"),
    ("budget_bool.toml", b"[search]\nbudget = true\n", "budget_bool.toml: search.budget: expected an integer, got True"),
    ("unknown_section.toml", b"[serch]\nbudget = 3\n", "unknown key(s) ['serch']"),
    ("unknown_key.toml", b"[search]\nbudgit = 3\n", "search: unknown key(s) ['budgit']"),
    ("k.toml", b"[cluster]\nk = -3\n", "k.toml: cluster.k = -3"),
    ("nan.toml", b"[mixture]\ncap_multiple = nan\n", "nan.toml: mixture.cap_multiple = nan"),
    ("inf.toml", b"[mixture]\ntemperature = inf\n", "inf.toml: mixture.temperature = inf"),
    ("kind_list.toml", b"[proxy]\nkind = [\"gpt\"]\n", "kind_list.toml: proxy.kind: expected a string"),
    ("section_scalar.toml", b"search = 3\n", "search: expected a table"),
    ("spec_bad.toml", b"[[target.specs]]\nkind = \"mc\"\npath = \"data/eval/piqa.jsonl\"\nweight = -2.0\n", "target.specs[0].weight = -2.0"),
    ("spec_kind.toml", b"[[target.specs]]\nkind = \"essay\"\npath = \"x\"\n", "target.specs[0].kind = 'essay' is not valid: valid one of mc, text"),
]

DECONTAM = [
    Case("decontam_unknown_name", ["decontam", "{ws}", "--target", "arc_challenge"], "known: arc_easy, hellaswag, piqa"),
    Case("decontam_missing_file", ["decontam", "{ws}", "--target", "mc:/nonexistent.jsonl"], "/nonexistent.jsonl"),
    Case("decontam_bad_file", ["decontam", "{ws}", "--target", "mc:{files}/m.jsonl"], "m.jsonl:1: 'label'", files={"m.jsonl": _mc({**MC_OK, "label": True})}),
    Case("status_no_workspace", ["status", "{files}/nowhere"], "nowhere"),
    Case("usage_budget_abc", ["search", "{ws}", "--budget", "abc"], "invalid int value", rc=2),
    Case("usage_tokens_float", ["search", "{ws}", "--proxy-tokens", "1.5"], "invalid int value", rc=2),
    Case("usage_unknown_flag", ["search", "{ws}", "--bogus"], "unrecognized arguments", rc=2),
    Case("usage_k_word", ["cluster", "{ws}", "--k", "many"], "invalid int value", rc=2),
]

ALL_CASES: list[Case] = [
    *SEARCH_TARGETS,
    *[Case(f"flag{flag}={value}", ["search", "{ws}", flag, value], words) for flag, value, words in SEARCH_FLAGS],
    *[Case(f"set {item.encode('utf-8', 'backslashreplace').decode()}", ["search", "{ws}", "--set", item], words) for item, words in SETS],
    *[Case(f"{argv[0]} {' '.join(argv[2:])}", argv, words) for argv, words in STAGE_FLAGS],
    *[Case(f"config {name}", ["search", "{ws}", "--config", f"{{files}}/{name}"], words, files={name: data})
      for name, data, words in CONFIG_FILES],
    Case("config_missing", ["search", "{ws}", "--config", "/nonexistent.toml"], "config file not found: /nonexistent.toml"),
    Case("config_folder", ["search", "{ws}", "--config", "{files}"], "cannot read the config file"),
    *DECONTAM,
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return build_domain_workspace(tmp_path_factory.mktemp("bad-inputs") / "ws")


def _fill(argv: list[str], ws: Workspace, files: Path) -> list[str]:
    return [a.replace("{ws}", str(ws.root)).replace("{files}", str(files)) for a in argv]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as exit_:   # argparse's usage errors
        rc = exit_.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_case_count():
    n = len(ALL_CASES) + len(CORPORA) + len(EXPORTS) + len(SUBPROCESS)
    print(f"\n{n} bad inputs checked")
    assert n >= 100


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_bad_input_is_refused_clearly(case: Case, ws, tmp_path, capsys):
    files = tmp_path / "files"
    files.mkdir()
    for name, data in (case.files or {}).items():
        (files / name).write_bytes(data)
    toml_before = ws.config_path.read_bytes()
    rc, out, err = run_cli(_fill(case.argv, ws, files), capsys)
    assert "Traceback" not in out + err
    assert rc == case.rc, (rc, err)
    assert err.strip(), "a message on stderr"
    assert case.expect.replace("{files}", str(files)) in err, err
    if rc == 1:
        assert err.startswith("error: ")
    assert ws.scalar("SELECT count(*) FROM searches") == 0, "no search recorded"
    assert ws.config_path.read_bytes() == toml_before, "climb.toml left as it was"


# ------------------------------------------------------------------------------------- corpora
def _jsonl(*rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


ROWS = demo_rows(4)
_PACKED = gzip.compress(_jsonl(*demo_rows(200)))

# name -> (file name, bytes, expected rejected reason, words in its detail); reason None: the stage fails.
CORPORA = {
    "truncated_gzip": ("c.jsonl.gz", _PACKED[: len(_PACKED) // 2], "damaged", "truncated"),
    "gzip_bad_header": ("c.jsonl.gz", b"\x1f\x8b" + b"garbage!" * 8, "damaged", "damaged"),
    "gzip_corrupt": ("c.jsonl.gz", _PACKED[:400] + b"\0" * 64 + _PACKED[464:], "damaged", "damaged"),
    "bad_json": ("c.jsonl", _jsonl(ROWS[0]) + b"{oops\n", "bad_json", "column"),
    "bad_utf8": ("c.jsonl", _jsonl(ROWS[0]) + b'{"id": "x", "text": "caf\xe9"}\n', "bad_utf8", "0xe9"),
    "long_id": ("c.jsonl", _jsonl(ROWS[0], {**ROWS[1], "id": "x" * 1001}), "bad_id", "longer than 1000"),
    "surrogate_id": ("c.jsonl", _jsonl(ROWS[0]) + b'{"id": "a\\ud800", "text": "some text here"}\n', "bad_id", "lone surrogate"),
    "int_and_str_id": ("c.jsonl", _jsonl({**ROWS[0], "id": 1}, {**ROWS[1], "id": "1"}), "duplicate_id", '1 and "1" are the same id'),
    "bool_id": ("c.jsonl", _jsonl(ROWS[0], {**ROWS[1], "id": True}), "bad_id", "not a bool"),
    "list_id": ("c.jsonl", _jsonl(ROWS[0], {**ROWS[1], "id": [1, 2]}), "bad_id", "not a list"),
    "missing_text": ("c.jsonl", _jsonl(ROWS[0], {"id": "y", "body": "x"}), "missing_text", "no field 'text'"),
    "text_not_string": ("c.jsonl", _jsonl(ROWS[0], {"id": "y", "text": 5}), "not_text", "is a int"),
    "empty_text": ("c.jsonl", _jsonl(ROWS[0], {"id": "y", "text": "   "}), "empty", "after stripping"),
    "not_object": ("c.jsonl", _jsonl(ROWS[0]) + b"[1, 2]\n", "not_object", "not an object"),
    "json_array_file": ("c.json", json.dumps(ROWS[:2]).encode(), None, "a JSON array, not JSON Lines"),
    "csv_no_text_column": ("c.csv", b"id,body\n1,hello\n", None, "no text column 'text'"),
    "parquet_garbage": ("c.parquet", b"not parquet at all", None, "not a readable Parquet file"),
    "unknown_suffix": ("c.data", b"x\n", None, "cannot tell the format"),
}


@pytest.mark.parametrize("name", list(CORPORA))
def test_bad_corpus_is_rejected_or_refused(name, tmp_path, capsys):
    fname, data, reason, words = CORPORA[name]
    path = tmp_path / fname
    path.write_bytes(data)
    ws = Workspace.init(tmp_path / "ws")
    rc, out, err = run_cli(["ingest", str(ws.root), "--input", str(path), "--quiet"], capsys)
    assert "Traceback" not in out + err
    if reason is None:
        assert rc == 1 and err.startswith("error: ") and words in err and str(path) in err, err
        assert ws.scalar("SELECT count(*) FROM documents") == 0
        return
    if rc == 1:   # every record rejected: the stage fails, naming the input and the reasons
        assert err.startswith("error: ") and str(path) in err and reason in err and words in err, err
        return
    assert rc == 0, err
    rej = ws.query_df("SELECT * FROM rejected WHERE reason = ?", [reason])
    assert len(rej) >= 1, (out, err)
    assert words in " ".join(rej["detail"]) and rej["source_file"].iloc[0] == str(path.resolve())
    assert ws.scalar("SELECT count(*) FROM documents") >= 1, "the good records are kept"


# --------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workspace with one search marked done with its prior as the final mixture (no proxy trained):
    enough for export to get as far as checking its output folder."""
    from climb_core.search import create_search
    from tests.helpers import search_config

    ws = build_domain_workspace(tmp_path_factory.mktemp("bad-export") / "ws")
    sid = create_search(ws, search_config("natural", 1))
    with ws.connect() as con:
        con.execute("UPDATE searches SET status = 'done', final_weights = prior WHERE search_id = ?", [sid])
    return ws, sid


EXPORTS = {
    "read_only_parent": (["--out", "/sys/climb-export-test/out"], "output folder /sys/climb-export-test/out: cannot create /sys/climb-export-test"),
    "out_is_file": (["--out", "{files}/afile"], "is a file, not a folder"),
    "inside_workspace": (["--out", "{ws}/mine"], "is inside the workspace"),
    "tokens_zero": (["--out", "{files}/o", "--dataset-tokens", "0"], "give a positive number of tokens"),
    "tokens_negative": (["--out", "{files}/o", "--dataset-tokens", "-5"], "give a positive number of tokens"),
    "unknown_format": (["--out", "{files}/o", "--formats", "deepspeed"], "deepspeed"),
    "unknown_run": (["--out", "{files}/o", "--search", "no-such-search"], "no-such-search"),
}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_bad_export_is_refused(name, finished, tmp_path, capsys):
    ws, sid = finished
    files = tmp_path / "files"
    files.mkdir()
    (files / "afile").write_text("x")
    extra, words = EXPORTS[name]
    argv = ["export", str(ws.root), "--search", sid, *[a.replace("{files}", str(files)).replace("{ws}", str(ws.root)) for a in extra]]
    rc, out, err = run_cli(argv, capsys)
    assert "Traceback" not in out + err
    assert rc == 1 and err.startswith("error: ") and words in err, err
    assert not (files / "o").exists()
    assert ws.scalar("SELECT count(*) FROM exports") == 0


def _read_only(folder):
    """A folder this process cannot write to, root included, and the undo.

    Permission bits do not bind root; the immutable attribute does (ext4, xfs, btrfs, tmpfs). Where
    the filesystem refuses the attribute, /proc/self stands in: a real folder no process can create
    files in."""
    import subprocess

    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return folder, lambda: folder.chmod(0o755)
    try:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    except FileNotFoundError:  # no e2fsprogs
        made = False
    if not made:
        return Path("/proc/self").resolve(), lambda: None
    return folder, lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_export_folder_is_named(finished, tmp_path, capsys):
    ws, sid = finished
    parent, undo = _read_only(tmp_path / "ro")
    try:
        rc, _, err = run_cli(["export", str(ws.root), "--search", sid, "--out", str(parent / "out")], capsys)
    finally:
        undo()
    assert rc == 1 and f"{parent} is not writable" in err, err
    assert not (parent / "out").exists() and ws.scalar("SELECT count(*) FROM exports") == 0


# ----------------------------------------------------------------------------------- subprocess
SUBPROCESS = {
    "target_missing": ([b"search", b"{ws}", b"--target", b"mc:/nonexistent.jsonl"], b"/nonexistent.jsonl does not exist"),
    "set_undecodable_bytes": ([b"search", b"{ws}", b"--set", b"search.name=caf\xe9"], b"search.name = 'caf\\udce9' holds bytes that are not valid UTF-8"),
    "flag_undecodable_bytes": ([b"search", b"{ws}", b"--strategy", b"\xff"], b"holds bytes that are not valid UTF-8"),
    "map_neighbors_zero": ([b"map", b"{ws}", b"--n-neighbors", b"0"], b"map.n_neighbors = 0"),
    "budget_overflow_file": ([b"search", b"{ws}", b"--config", b"{files}/huge.toml"], b"too large for an integer"),
}


@pytest.mark.parametrize("name", list(SUBPROCESS))
def test_bad_input_through_a_real_process(name, ws, tmp_path):
    (tmp_path / "huge.toml").write_bytes(b"[search]\nbudget = 1e400\n")
    argv, words = SUBPROCESS[name]
    argv = [a.replace(b"{ws}", str(ws.root).encode()).replace(b"{files}", str(tmp_path).encode()) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([sys.executable.encode(), b"-m", b"climb_core.cli", *argv], capture_output=True, env=env,
                          cwd=REPO, timeout=120)
    assert b"Traceback" not in proc.stdout + proc.stderr, proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(b"error: ") and words in proc.stderr, proc.stderr
    assert ws.scalar("SELECT count(*) FROM searches") == 0
