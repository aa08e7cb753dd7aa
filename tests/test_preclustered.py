"""A corpus that arrives with its own clusters skips embedding and k-means and keeps their names."""

from __future__ import annotations

from climb_core.catalogue.workspace import Workspace
from climb_core.pipeline.run import planned_stages, run_all, workspace_status
from tests.helpers import small_config, write_demo_slice


def test_preclustered_corpus_keeps_its_clusters(tmp_path):
    corpus = write_demo_slice(tmp_path / "c.jsonl", 300)
    config = small_config(**{"ingest.cluster_field": "domain", "merge.target_clusters": 0})
    config.ingest.paths = [str(corpus)]
    ws = Workspace.init(tmp_path / "ws", config)
    assert planned_stages(config) == ["ingest", "cluster", "refine", "describe"]
    run_all(ws, config, progress=False)

    st = workspace_status(ws)
    assert not any(ws.embeddings_dir.glob("*.npy")), "embedding should have been skipped"
    labels = set(ws.query_df("SELECT label FROM clusters WHERE state = 'active'")["label"])
    truth = {"encyclopedia", "legal", "literature", "political_speech", "science_abstracts"}
    assert labels == truth, labels
    # every document sits in the cluster its record named
    df = ws.query_df("""SELECT json_extract_string(d.meta_json, '$.domain') AS domain, d.preset_cluster, c.label
                        FROM documents d JOIN doc_clusters USING (doc_idx) JOIN clusters c USING (cluster_id)""")
    assert (df["preset_cluster"] == df["label"]).all()
    assert st["clusters"]["active"] == 5
