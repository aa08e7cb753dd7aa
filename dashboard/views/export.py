"""Export: write a search's mixture and a dataset sampled by it; download both."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import streamlit as st

from climb_core import jobs, queries
from climb_core.catalogue.stages import StageError
from climb_core.export.mixture import repeated_clusters, repetition_warning
from climb_core.search import search_final_scale
from dashboard import widgets as w

ws = w.workspace()
st.title("Export")
searches = queries.searches(ws)
if searches.empty:
    st.info("No searches yet: a search's final mixture is what gets exported.")
    st.stop()

ids = searches["search_id"].tolist()
want = st.session_state.get("rounds_search")
names = dict(zip(searches["search_id"], searches["name"].fillna("")))
sid = st.selectbox("Search", ids, index=ids.index(want) if want in ids else 0,
                   format_func=lambda s: f"{names.get(s) or s} ({s})")
info = queries.search_info(ws, sid) or {}
if not info.get("final_weights"):
    st.warning("This search has no final mixture yet (it is still running or stopped early).")
else:
    # The dataset below is sampled at its own size; this is the mixture where the model will train.
    w.final_scale_table({"final": (info["final_weights"], search_final_scale(ws, sid))},
                        info.get("cluster_ids") or [], [str(x) for x in info.get("cluster_labels") or []],
                        key="export_epochs")

cfg = ws.load_config()
c1, c2 = st.columns(2)
tokens = c1.number_input("Tokens in the dataset", 1000, 10**13, int(cfg.export.tokens), step=100_000)
out_dir = c2.text_input("Output folder", str(ws.exports_dir / sid))
spaced = any(ch.isspace() for ch in str(Path(out_dir).expanduser().resolve()))
if spaced:
    # Megatron-LM splits its blend on whitespace, so the export refuses such a folder for that format.
    st.error("The output folder's path holds whitespace, which Megatron-LM's blend cannot carry; choose a path without spaces.")
st.caption(
    "Writes Parquet shards of the token-budget sample (Hugging Face datasets), and for Megatron-LM and NeMo every "
    "training document of each weighted cluster once, tokenised with "
    + (f"`{cfg.export.tokenizer}`" if cfg.export.tokenizer else "the workspace tokenizer")
    + (" (the sample instead of whole clusters)" if cfg.export.sample else "")
    + ", with the weights in the blend ([export] tokenizer and sample in the workspace settings; see docs/export.md).")
if st.button("Export", type="primary", disabled=not info.get("final_weights") or spaced):
    try:
        job = jobs.start_export_job(ws, sid, out_dir, int(tokens))
    except StageError as err:  # a stale pipeline: the message names the stage and the command to run
        st.error(str(err))
    else:
        st.session_state["export_job"] = job
        st.rerun()


def _job() -> None:
    job_id = st.session_state.get("export_job")
    if not job_id:
        return
    row = jobs.job_status(ws, job_id)
    st.write(f"Export job {job_id}: {w.status_badge(row['status'])}")
    if row["status"] in ("running", "cancelling"):
        w.log_box(jobs.log_tail(ws, job_id))
    elif row["status"] != "done":
        st.error("The export failed:")
        w.log_box(jobs.log_tail(ws, job_id, n_lines=30))
    if row["status"] not in ("running", "cancelling") and st.session_state.get("export_running"):
        st.session_state["export_running"] = False
        st.rerun()


job_id = st.session_state.get("export_job")
running = bool(job_id) and jobs.job_status(ws, job_id)["status"] in ("running", "cancelling")
st.session_state["export_running"] = running
st.fragment(_job, run_every=1 if running else None)()

st.subheader("Exports of this search")
ex = queries.exports(ws, sid)
if ex.empty:
    st.caption("None yet.")
    st.stop()
pick = st.selectbox("Export", ex["export_id"].tolist(),
                    format_func=lambda e: f"{e} ({ex.set_index('export_id').loc[e, 'created_at']})")
row = ex[ex["export_id"] == pick].iloc[0]
try:
    manifest = json.loads(row["manifest_json"]) if row["manifest_json"] else {}
except ValueError:
    manifest = {}
clusters = manifest.get("clusters") or []
for c in repeated_clusters(manifest):
    st.warning(w.md(repetition_warning(c)))
if clusters:
    st.caption("Per cluster: rows in the Parquet sample, how many distinct documents they are, and how often the "
               "cluster was repeated to reach its share.")
    st.dataframe([{"cluster": c["cluster_id"], "label": c["label"], "weight": round(c["weight"], 4),
                   "share": round(c.get("share", 0.0), 4), "rows": c["docs"],
                   "distinct documents": c.get("distinct_docs", c["docs"]), "epochs": c["epochs"]}
                  for c in clusters], hide_index=True)
trainer = manifest.get("trainer_data") or {}
if trainer:
    out = row["path"]
    st.markdown("**Train on it** (more in docs/export.md)")
    st.code(f'datasets.load_dataset("{out}", split="train")', language="python")
    if "megatron" in (manifest.get("formats") or {}):
        st.code(f"pretrain_gpt.py ... --per-split-data-args-path {out}/megatron-blend.json", language="bash")
    if "nemo" in (manifest.get("formats") or {}):
        st.code(f'llm.PreTrainingDataModule(paths=json.load(open("{out}/nemo-blend-splits.json")), ...)', language="python")
st.json(manifest, expanded=False)
folder = Path(row["path"])
files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
weights = manifest.get("weights") or manifest.get("mixture") or {
    "search_id": sid, "cluster_ids": info.get("cluster_ids"), "cluster_labels": info.get("cluster_labels"),
    "weights": info.get("final_weights")}
d1, d2 = st.columns(2)
d1.download_button("Download weights (JSON)", json.dumps(weights, indent=2, default=str).encode(),
                   file_name=f"{sid}-weights.json", mime="application/json")


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for p in files:
            z.write(p, p.relative_to(folder))
    return buf.getvalue()


d2.download_button(f"Download dataset (zip of {len(files)} files)", _zip, file_name=f"{sid}-export.zip",
                   mime="application/zip", disabled=not files)
with st.expander("Files"):
    for p in files:
        st.text(f"{p.relative_to(folder)}  ({p.stat().st_size:,} bytes)")
