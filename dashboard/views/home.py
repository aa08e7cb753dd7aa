"""Home: the workspace at a glance; run pending stages as background jobs."""

from __future__ import annotations

import dataclasses

import streamlit as st

from climb_core import jobs, queries
from dashboard import widgets as w

ws = w.workspace()
st.title("CLIMB Studio")
ov = queries.corpus_overview(ws)

if ov["documents"] == 0:
    st.subheader("Start here")
    st.markdown(
        "This workspace has no documents yet. Give it a corpus (JSONL, JSONL.gz, Parquet, CSV or a folder of "
        ".txt files) and run the pipeline:\n\n"
        f"```\nclimb ingest {ws.root} --input corpus.jsonl.gz\nclimb run-all {ws.root}\n```\n"
        "or set the input below and run the stages from here.")
    cfg = ws.load_config()
    paths = st.text_input("Input files or folders (comma separated)", value=", ".join(cfg.ingest.paths))
    near_dup = st.checkbox("Also remove near-duplicates (MinHash)", value=cfg.ingest.near_dup,
                           help="Documents that nearly copy an earlier one (estimated Jaccard >= "
                                f"{cfg.ingest.near_dup_threshold} on {cfg.ingest.near_dup_ngram}-word shingles) "
                                "go to the rejected records, naming the one kept.")
    if st.button("Save input and run all stages", type="primary", disabled=not paths.strip()):
        new = dataclasses.replace(cfg, ingest=dataclasses.replace(
            cfg.ingest, paths=[p.strip() for p in paths.split(",") if p.strip()], near_dup=near_dup))
        ws.save_config(new)
        job = jobs.start_stage_job(ws, "run-all")
        st.success(f"started job {job}")

c = st.columns(5)
c[0].metric("Documents", f"{ov['documents']:,}")
c[1].metric("Tokens (est.)", f"{ov['tokens_est']:,}")
c[2].metric("Mean quality", "–" if ov["mean_quality"] is None else f"{ov['mean_quality']:.3f}")
c[3].metric("Active clusters", ov["clusters"].get("active", 0),
            help=", ".join(f"{k}: {v}" for k, v in sorted(ov["clusters"].items())) or None)
c[4].metric("Rejected records", f"{ov['rejected_total']:,}")

left, right = st.columns([3, 2])
with left:
    st.subheader("Stages")
    stages = queries.stage_status(ws)
    running = set(jobs.running_jobs(ws)["kind"])
    for row in stages.itertuples():
        cols = st.columns([2, 2, 5, 2])
        cols[0].write(f"**{row.stage}**")
        cols[1].write(w.status_badge("running" if row.stage in running else row.status))
        cols[2].caption(w.md(row.message) if isinstance(row.message, str) else "")
        label = {"pending": "Run", "failed": "Run", "interrupted": "Resume", "stale": "Run"}.get(row.status, "Re-run")
        if cols[3].button(label, key=f"run-{row.stage}", disabled=row.stage in running):
            job = jobs.start_stage_job(ws, row.stage, force=row.status == "done")
            st.toast(f"started {row.stage} ({job})")
            st.rerun()
    if st.button("Run all pending stages", disabled=bool(running)):
        job = jobs.start_stage_job(ws, "run-all")
        st.toast(f"started run-all ({job})")
        st.rerun()
with right:
    st.subheader("Rejected records")
    if ov["rejected_total"]:
        st.dataframe(ov["rejected"], hide_index=True)
        with st.expander("Examples"):
            w.show_docs(queries.rejected_sample(ws, limit=50))
    else:
        st.caption("None.")
    st.subheader("Latest search")
    latest = ov["latest_search"]
    if latest:
        st.write(f"**{w.md(latest['name'] or latest['search_id'])}** · {w.md(latest['strategy'])} · "
                 f"{w.status_badge(latest['status'])}")
        if latest.get("message"):
            st.caption(w.md(latest["message"]))
        st.page_link("views/rounds.py", label="Open its rounds", icon=":material/monitoring:")
    else:
        st.caption("No search yet.")
        st.page_link("views/search.py", label="Start a search", icon=":material/search:")


def _jobs() -> None:
    st.subheader("Background jobs")
    df = jobs.list_jobs(ws, limit=10)
    if df.empty:
        st.caption("No jobs started from the dashboard yet.")
        return
    st.dataframe(df[["job_id", "kind", "status", "started_at", "finished_at", "message"]], hide_index=True)
    active = df[df["status"].isin(["running", "cancelling"])]
    was = st.session_state.get("home_running_jobs", set())
    now = set(active["job_id"])
    st.session_state["home_running_jobs"] = now
    if was - now:  # a job finished: redraw the whole page so the stages table shows it
        st.rerun()
    for row in active.itertuples():
        with st.expander(f"{row.job_id} ({row.status})", expanded=True):
            w.log_box(jobs.log_tail(ws, row.job_id))
            if st.button("Cancel", key=f"cancel-{row.job_id}"):
                jobs.cancel_job(ws, row.job_id)
                st.rerun()
    last = df.iloc[0]
    if last["status"] not in ("running", "cancelling"):
        with st.expander(f"Log of {last['job_id']} ({last['status']})"):
            w.log_box(jobs.log_tail(ws, last["job_id"], n_lines=40))


st.fragment(_jobs, run_every=3 if running else None)()
