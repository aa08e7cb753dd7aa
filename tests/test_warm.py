"""Warm starts, on the known-optimum objective: runs imported and exported, a search learning from
another's runs from round 1, and runs carried to the current clusters after each kind of edit.

Workspace: `tests.helpers.build_domain_workspace` (the demo corpus clustered by its true domain split
in two, 10 clusters, set by SQL), a fresh one per test that edits clusters.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from climb_core import cli
from climb_core.catalogue.workspace import Workspace
from climb_core.pipeline import edits
from climb_core.search import create_search, run_search, search_report, search_runs
from climb_core.search.imports import RunsImportError, import_runs, runs_csv
from climb_core.search.records import SearchError
from climb_core.search.synthetic import objective
from climb_core.search.warm import PRUNE_KEEP, Lineage, carry_weights, training_runs, warm_offers
from tests.helpers import build_domain_workspace, search_config


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return build_domain_workspace(tmp_path_factory.mktemp("warm") / "ws")


@pytest.fixture()
def fresh(tmp_path) -> Workspace:
    return build_domain_workspace(tmp_path / "ws")


def _search(ws, strategy="random", budget=12, seed=0, **kw):
    sid = create_search(ws, search_config(strategy, budget, seed), **kw)
    run_search(ws, sid, objective=objective, progress=False)
    return sid


def _n_searches(ws) -> int:
    return int(ws.scalar("SELECT count(*) FROM searches"))


# ------------------------------------------------------------------------------------ import/export
def test_csv_round_trip(ws, tmp_path, capsys):
    sid = _search(ws, "climb", 9)
    out = tmp_path / "runs.csv"
    assert cli.main(["runs", str(ws.root), "--search", sid, "--csv", str(out)]) == 0
    assert cli.main(["runs", "import", str(ws.root), str(out), "--name", "back"]) == 0
    new = ws.scalar("SELECT search_id FROM searches WHERE name = 'back'")
    a = search_runs(ws, sid)
    a = a[a["status"] == "done"]
    b = search_runs(ws, new)
    assert len(a) == len(b) == 9
    assert np.allclose(np.stack(a["weights"]), np.stack(b["weights"]), atol=1e-12)
    assert np.array_equal(a["score"].to_numpy(), b["score"].to_numpy())
    # The metric columns come back too, and the round trip is stable: exporting the import gives the same table.
    assert json.loads(b["scores_json"].iloc[0])["synthetic"] == json.loads(a["scores_json"].iloc[0])["synthetic"]
    rep = search_report(ws, new)
    assert rep["strategy"] == "imported" and rep["status"] == "done" and rep["final_weights"]
    assert rep["best_run"]["score"] == a["score"].max()
    again = pd.read_csv(pd.io.common.StringIO(runs_csv(ws, new)))
    first = pd.read_csv(out)
    assert np.allclose(again[[str(c) for c in rep["cluster_ids"]]].to_numpy(),
                       first[[str(c) for c in rep["cluster_ids"]]].to_numpy(), atol=1e-12)
    # JSONL and Parquet read the same table; labels name clusters as well as ids.
    labels = dict(zip(map(str, rep["cluster_ids"]), rep["cluster_labels"]))
    first.rename(columns=labels).to_json(tmp_path / "runs.jsonl", orient="records", lines=True)
    first.to_parquet(tmp_path / "runs.parquet")
    for f in ("runs.jsonl", "runs.parquet"):
        other = import_runs(ws, tmp_path / f)
        assert np.allclose(np.stack(search_runs(ws, other)["weights"]), np.stack(b["weights"]))


def _table(ws, n=4, seed=0) -> pd.DataFrame:
    ids = [int(c) for c in ws.query_df("SELECT cluster_id FROM clusters WHERE state = 'active' ORDER BY 1")["cluster_id"]]
    W = np.random.default_rng(seed).dirichlet(np.ones(len(ids)), n)
    df = pd.DataFrame(W, columns=[str(c) for c in ids])
    df["score"] = np.linspace(-0.5, -0.1, n)
    df["acc"] = 0.3
    return df


@pytest.mark.parametrize("case, message", [
    ("sum", "do not sum to 1"), ("unknown", "unknown or inactive cluster"), ("missing", "no weight column for cluster"),
    ("nan", "missing or non-numeric weights"), ("negative", "negative weights"), ("noscore", "no 'score' column"),
    ("nanscore", "score on line(s) 3"),
])
def test_import_validation(ws, tmp_path, capsys, case, message):
    df = _table(ws)
    if case == "sum":
        df.loc[1, "0"] += 0.01
    elif case == "unknown":
        df["99"] = 0.0
    elif case == "missing":
        df = df.drop(columns=["3"])
    elif case == "nan":
        df.loc[2, "4"] = np.nan
    elif case == "negative":
        df.loc[0, "0"], df.loc[0, "1"] = df.loc[0, "0"] + 0.2, df.loc[0, "1"] - 0.2
        df.loc[0, "1"] = -abs(df.loc[0, "1"]) if df.loc[0, "1"] > 0 else df.loc[0, "1"]
        df.loc[0, "0"] = 1 - df.loc[0, [c for c in df.columns if c not in ("0", "score", "acc")]].sum()
    elif case == "noscore":
        df = df.drop(columns=["score"])
    elif case == "nanscore":
        df.loc[1, "score"] = np.nan
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    before = (_n_searches(ws), ws.table_count("proxy_runs"))
    assert cli.main(["runs", "import", str(ws.root), str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and str(path) in err, err
    assert (_n_searches(ws), ws.table_count("proxy_runs")) == before  # nothing half-imported


def test_import_with_map(ws, tmp_path):
    # The user's runs were over 2 domains: "a" is clusters 0 and 1 (shared by token prior), "b" the other 8.
    df = pd.DataFrame({"a": [0.25, 0.75], "b": [0.75, 0.25], "score": [-0.2, -0.1]})
    df.to_csv(tmp_path / "dom.csv", index=False)
    (tmp_path / "map.json").write_text(json.dumps({"a": [0, 1], "b": list(range(2, 10))}))
    sid = import_runs(ws, tmp_path / "dom.csv", map_path=tmp_path / "map.json")
    W = np.stack(search_runs(ws, sid)["weights"])
    assert np.allclose(W[:, :2].sum(axis=1), [0.25, 0.75]) and np.allclose(W.sum(axis=1), 1)
    (tmp_path / "bad.json").write_text(json.dumps({"a": [0, 77], "b": [2]}))
    with pytest.raises(RunsImportError, match="unknown or inactive cluster"):
        import_runs(ws, tmp_path / "dom.csv", map_path=tmp_path / "bad.json")


# --------------------------------------------------------------------------------------- warm start
def test_warm_start_same_clusters(ws, capsys):
    src = _search(ws, "climb", 16, seed=1)
    sid = create_search(ws, search_config("climb", 8, seed=2), warm_start=[src])
    s = run_search(ws, sid, objective=objective, progress=False)
    runs = search_runs(ws, sid)
    own = runs[runs["purpose"] != "warm"]
    assert len(own) == 8 and s.n_runs == 8 and s.n_done == 8       # the budget counts new runs only
    assert (runs["purpose"] == "warm").sum() == 16
    rep = search_report(ws, sid)
    # The predictor sees the 16 warm runs from round 1 (the covering design is skipped: 16 >= 10 clusters).
    r1 = [r for r in rep["predictor_reports"] if r["round"] == 1]
    assert r1 and r1[0]["n_train"] == 16
    assert all(r["n_train"] >= 16 for r in rep["predictor_reports"])
    warm = [r for r in rep["runs"] if r["warm"]]
    assert len(warm) == 16 and all(r["source_search"] == src and r["mapping"] == "reused" for r in warm)
    assert rep["warm_start"]["sources"][0]["reused"] == 16 and rep["n_warm"] == 16
    # The answer is one of the search's own runs or its verified final, never a warm run.
    assert not rep["final"]["best_run"]["run_id"].startswith(f"{sid}-w")
    # `runs --json` marks them, the text report counts them.
    assert cli.main(["runs", str(ws.root), "--search", sid, "--json"]) == 0
    js = json.loads(capsys.readouterr().out)["searches"][0]
    assert sum(r["warm"] for r in js["runs"]) == 16
    assert cli.main(["runs", str(ws.root), "--search", sid]) == 0
    assert "warm runs: 16 from" in capsys.readouterr().out


def test_warm_start_from_import_and_few_runs(ws, tmp_path):
    # 4 imported runs (< 10 clusters): the covering round stays, the warm runs join from round 2.
    _table(ws, 4).to_csv(tmp_path / "few.csv", index=False)
    imp = import_runs(ws, tmp_path / "few.csv")
    sid = create_search(ws, search_config("climb", 6), warm_start=[imp])
    run_search(ws, sid, objective=objective, progress=False)
    reps = search_report(ws, sid)["predictor_reports"]
    assert reps, "the predictor reported from round 2 on"
    assert 1 not in [r["round"] for r in reps]
    assert reps[0]["n_train"] == 4 + 3   # the 4 warm runs and round 1's 3


def test_warm_start_settings_refused_or_offset(ws):
    src = _search(ws, "random", 10, seed=3)
    cfg = search_config("climb", 6, seed=4)
    cfg.proxy.tokens = 123_456
    before = _n_searches(ws)
    with pytest.raises(SearchError, match="proxy settings differ: tokens"):
        create_search(ws, cfg, warm_start=[src])
    with pytest.raises(SearchError, match="no such search"):
        create_search(ws, search_config("climb", 6), warm_start=["nope"])
    assert _n_searches(ws) == before
    sid = create_search(ws, cfg, warm_start=[src], warm_start_any=True)
    info = search_report(ws, sid)["warm_start"]["sources"][0]
    assert info["offset"] and "tokens" in info["difference"]
    # With no own runs yet, an offset source is centred on 0; once own runs exist, on their mean.
    X, y = training_runs(ws, sid, search_report(ws, sid)["warm_start"])
    assert len(y) == 10 and abs(y.mean()) < 1e-12
    raw = search_runs(ws, src)["score"].to_numpy()
    assert np.allclose(np.diff(y), np.diff(raw))  # a shift, not a change of scale or order
    run_search(ws, sid, objective=objective, progress=False)
    own = search_runs(ws, sid)
    own = own[own["purpose"] == "explore"]
    X, y = training_runs(ws, sid, search_report(ws, sid)["warm_start"])
    assert np.isclose(y[:10].mean(), own["score"].mean())


# ------------------------------------------------------------------------------------------ lineage
def _carry(ws, old_ids, W, created=None):
    new_ids = [int(c) for c in ws.query_df("SELECT cluster_id FROM clusters WHERE state = 'active' ORDER BY 1")["cluster_id"]]
    return new_ids, carry_weights(Lineage(ws), old_ids, created, np.asarray(W, dtype=float), new_ids)


def _tokens(ws, ids):
    t = ws.query_df("SELECT dc.cluster_id, sum(s.n_tokens_est) AS t FROM doc_clusters dc JOIN doc_stats s USING (doc_idx) "
                    "GROUP BY 1").set_index("cluster_id")["t"].astype(float)
    return t.loc[ids]


OLD = list(range(10))
W1 = np.array([[0.1] * 10, [0.5, 0.3, 0.2] + [0.0] * 7])


def test_lineage_unchanged(fresh):
    new, c = _carry(fresh, OLD, W1)
    assert new == OLD and np.allclose(c.weights, W1) and c.counts == {"reused": 2, "remapped": 0, "dropped": 0}


def test_lineage_merge(fresh):
    m = edits.merge_clusters(fresh, [0, 1], describe=False)
    new, c = _carry(fresh, OLD, W1)
    assert new == list(range(2, 10)) + [m]
    assert np.allclose(c.weights[:, -1], [0.2, 0.8]) and np.allclose(c.weights[:, 0], [0.1, 0.2])
    assert c.counts == {"reused": 0, "remapped": 2, "dropped": 0}
    # A run with no weight on the merged clusters is reused as it was.
    _, c = _carry(fresh, OLD, [[0, 0, 0.5, 0.5] + [0] * 6])
    assert c.counts["reused"] == 1


def test_lineage_split(fresh, monkeypatch):
    n = fresh.table_count("documents")
    emb = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    monkeypatch.setattr(edits, "_embeddings", lambda ws: emb)
    kids = edits.split_cluster(fresh, 2, 2)
    new, c = _carry(fresh, OLD, W1)
    t = _tokens(fresh, kids)
    share = (t / t.sum()).to_numpy()
    j = [new.index(k) for k in kids]
    assert np.allclose(c.weights[0, j], 0.1 * share) and np.allclose(c.weights[1, j], 0.2 * share)
    assert c.counts == {"reused": 0, "remapped": 2, "dropped": 0}
    # Undoing the split carries runs made on its children back to the parent (weights add).
    kid_run = np.zeros((1, len(new)))
    kid_run[0, j] = [0.3, 0.2]
    kid_run[0, new.index(0)] = 0.5
    edits.undo(fresh)
    back, c = _carry(fresh, new, kid_run)
    assert back == OLD and np.isclose(c.weights[0, 2], 0.5) and np.isclose(c.weights[0, 0], 0.5)


def test_lineage_prune_and_restore(fresh):
    edits.prune_clusters(fresh, [9])
    W = np.array([[0.1] * 10,                          # 10% on #9: dropped
                  [0.5, 0.45] + [0.0] * 7 + [0.05],    # 5%: kept, renormalised
                  [0.5, 0.5] + [0.0] * 8])             # none: reused
    new, c = _carry(fresh, OLD, W)
    assert new == OLD[:9] and c.counts == {"reused": 1, "remapped": 1, "dropped": 1} and PRUNE_KEEP == 0.05
    assert np.allclose(c.weights[0], np.array([0.5, 0.45] + [0.0] * 7) / 0.95)
    edits.restore_clusters(fresh, [9])
    new, c = _carry(fresh, OLD, W)
    assert new == OLD and c.counts == {"reused": 3, "remapped": 0, "dropped": 0} and np.allclose(c.weights, W)


def test_lineage_undo_merge_and_reused_id(fresh):
    m = edits.merge_clusters(fresh, [0, 1], describe=False)
    merged_ids = list(range(2, 10)) + [m]
    sid = create_search(fresh, search_config("random", 4))
    run_search(fresh, sid, objective=objective, progress=False)
    edits.undo(fresh)                                                 # #m is gone; 0 and 1 are back
    edits.merge_clusters(fresh, [2, 3], describe=False)               # a new cluster takes the id #m
    assert int(fresh.scalar("SELECT max(cluster_id) FROM clusters")) == m
    created = [int(x) for x in fresh.query_df("SELECT cluster_created FROM searches WHERE search_id = ?",
                                              [sid])["cluster_created"][0][-1:]]
    W = np.zeros((1, 9))
    W[0, -1] = 1.0                                                    # all on the old #m
    new, c = _carry(fresh, merged_ids, W, [None] * 8 + created)
    t = _tokens(fresh, [0, 1])
    assert np.allclose(c.weights[0, [new.index(0), new.index(1)]], (t / t.sum()).to_numpy())
    assert c.counts["remapped"] == 1
    # Warm-starting from that search after the edits: every run carried, and the dashboard offers it.
    s2 = create_search(fresh, search_config("climb", 4), warm_start=[sid])
    assert search_report(fresh, s2)["warm_start"]["remapped"] == 4
    offers = warm_offers(fresh)
    assert sid in set(offers["search_id"]) and offers.set_index("search_id").loc[sid, "remapped"] == 4


def test_search_page_offers_warm_start_after_an_edit(fresh, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    sid = _search(fresh, "random", 6)
    edits.merge_clusters(fresh, [0, 1], describe=False)
    monkeypatch.setenv("CLIMB_WORKSPACE", str(fresh.root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("views/search.py").run()
    assert not at.exception, [e.value for e in at.exception]
    pick = [m for m in at.multiselect if m.label.startswith("Warm-start from")]
    # Offered with its counts, but not picked for the user: which runs to learn from is theirs to say.
    assert pick and len(pick[0].options) == 1 and pick[0].value == []
    assert "0 reused, 6 remapped, 0 dropped" in pick[0].format_func(sid)
    assert any("clusters changed since 1 finished search" in i.value for i in at.info)


def test_a_source_stored_before_final_repetition_existed_trained_on_whole_clusters():
    import json

    from climb_core.config import ClimbConfig
    from climb_core.search.warm import settings_difference

    now = ClimbConfig()
    old = now.to_dict()
    del old["proxy"]["final_repetition"]
    targets = json.dumps([dict(vars(s)) for s in now.target.specs])
    why = settings_difference(json.dumps(now.to_dict()), targets, {"config_json": json.dumps(old), "target_json": targets})
    assert why and "final_repetition False there, True here" in why
    old["proxy"]["final_repetition"] = True
    assert settings_difference(json.dumps(now.to_dict()), targets, {"config_json": json.dumps(old), "target_json": targets}) is None


def test_pools_drawn_for_another_final_scale_are_other_proxies():
    import json

    from climb_core.config import ClimbConfig
    from climb_core.search.warm import settings_difference

    now = ClimbConfig()
    other = now.to_dict()
    other["mixture"]["final_tokens"] = 5_000_000
    targets = json.dumps([dict(vars(s)) for s in now.target.specs])
    why = settings_difference(json.dumps(now.to_dict()), targets, {"config_json": json.dumps(other), "target_json": targets})
    assert why and "final scale" in why and "5000000" in why
    # Whole-cluster proxies do not depend on the final scale.
    now.proxy.final_repetition = False
    other["proxy"]["final_repetition"] = False
    assert settings_difference(json.dumps(now.to_dict()), targets, {"config_json": json.dumps(other), "target_json": targets}) is None
