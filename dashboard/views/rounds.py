"""Rounds: a search's proxies round by round, refreshed live while it runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from climb_core import jobs, queries
from climb_core.search import rank_transfer, search_final_scale
from dashboard import widgets as w

ws = w.workspace()
st.title("Rounds")
searches = queries.searches(ws)
want = st.session_state.get("rounds_search")


@st.fragment(run_every=2)
def _wait_for_worker(search_id: str) -> None:
    """A search launched from the Search page exists once its worker has (re)tokenised the clusters."""
    if search_id in queries.searches(ws)["search_id"].tolist():
        st.rerun(scope="app")
    job = jobs.job_for_search(ws, search_id)
    if job is None or job["status"] not in ("running", "cancelling"):
        st.warning(f"The worker for search {search_id} ended before creating it; see its log on the Search page.")
    else:
        st.info(f"Search {search_id} is starting: its worker is preparing the token files. This page follows it.")


if want and (searches.empty or want not in searches["search_id"].tolist()) and jobs.job_for_search(ws, want):
    _wait_for_worker(want)
    st.stop()
if searches.empty:
    st.info("No searches yet: start one on the Search page.")
    st.page_link("views/search.py", label="Search", icon=":material/search:")
    st.stop()

ids = searches["search_id"].tolist()
meta = searches.set_index("search_id")
sid = st.selectbox("Search", ids, index=ids.index(want) if want in ids else 0,
                   format_func=lambda s: f"{meta.loc[s, 'name'] or s} · {meta.loc[s, 'strategy']} · {meta.loc[s, 'status']} ({s})")
st.session_state["rounds_search"] = sid


def _is_running() -> bool:
    job = jobs.job_for_search(ws, sid)
    if job is not None:
        return job["status"] in ("running", "cancelling")
    return (queries.search_info(ws, sid) or {}).get("status") == "running"  # started from the CLI


def _commands(info: dict, runs) -> None:
    """Command proxies: the runs whose commands are running (with their stderr so far) and the
    failed runs with the error and stderr tail they were recorded with."""
    if runs.empty or (info.get("config") or {}).get("proxy", {}).get("kind") != "command":
        return
    from climb_core.proxy.command import job_dir, stderr_tail

    running = runs[runs["status"] == "running"]
    failed = runs[runs["status"] == "failed"]
    st.markdown(f"**Commands:** {len(running)} running, {len(failed)} failed")
    for r in running.itertuples():
        d = job_dir(ws.root, sid, r.run_id)
        with st.expander(f"running: {r.run_id}"):
            st.caption(f"job folder {d}")
            st.code(stderr_tail(d) or "(no stderr yet)", language=None)
    for r in failed.itertuples():
        first = str(r.error or "").splitlines()[0] if r.error else "failed"
        with st.expander(f"failed: {r.run_id}: {first[:120]}"):
            st.code(str(r.error or ""), language=None)


def _draw() -> None:
    info = queries.search_info(ws, sid) or {}
    every = queries.proxy_runs(ws, sid)
    # Warm runs (round 0) were trained for other searches: shown apart, never counted as this search's.
    warm = every[every["purpose"] == "warm"] if not every.empty else every
    runs = every[every["purpose"] != "warm"] if not every.empty else every
    reports = queries.predictor_reports(ws, sid)
    labels = [str(x) for x in (info.get("cluster_labels") or [])]
    ids_ = info.get("cluster_ids") or []
    names = [f"{c}: {lbl}" for c, lbl in zip(ids_, labels)] or [str(i) for i in range(len(labels))]
    done = runs[runs["status"] == "done"] if not runs.empty else runs
    budget = (info.get("config") or {}).get("search", {}).get("budget")

    m = st.columns(5)
    m[0].metric("Status", str(info.get("status")))
    m[1].metric("Proxies trained", f"{len(done)}" + (f" / {budget}" if budget else ""))
    m[2].metric("Rounds", int(runs["round"].max()) if not runs.empty else 0)
    m[3].metric("Best score", "–" if done.empty else f"{done['score'].max():.4f}")
    last_sp = reports["spearman"].dropna()
    last_pred = reports["predictor"].dropna() if "predictor" in reports else reports["spearman"].iloc[0:0]
    m[4].metric("Predictor CV Spearman", "–" if last_sp.empty else f"{last_sp.iloc[-1]:.3f}",
                help=None if last_pred.empty else f"latest predictor: {last_pred.iloc[-1]}")
    if info.get("message"):
        st.caption(w.md(info["message"]))
    if not warm.empty:
        kinds = warm["mapping"].value_counts().to_dict()
        st.caption(w.md(f"Warm start: {len(warm)} runs from {', '.join(sorted(warm['source_search'].dropna().unique()))} "
                        f"({kinds.get('reused', 0)} reused, {kinds.get('remapped', 0)} remapped to the current clusters), "
                        f"in the predictor's training data from round 1; best warm score {warm['score'].max():.4f}."))
    _commands(info, runs)
    final = info.get("final") or {}
    if final.get("how"):
        # Only the text from the catalogue is escaped, so the bold label renders as bold.
        parts = [f"**Final mixture:** {w.md(final['how'])}"]
        if final.get("predicted") is not None:
            sd = final.get("predicted_sd")
            parts.append(w.md(f"predicted {final['predicted']:.4f}" + ("" if sd is None else f" ± {sd:.4f}")))
        if final.get("verified") is not None:
            parts.append(w.md(f"verified {final['verified']:.4f} over {len(final.get('verified_scores') or [])} run(s)"))
        st.markdown(" · ".join(parts))
        if final.get("chosen") == "best_run" and final.get("note"):
            st.warning(final["note"])
    if runs.empty:
        st.info("No proxy runs yet.")
        return

    c1, c2 = st.columns(2)
    with c1:
        pv = done.dropna(subset=["predicted", "score"])
        fig = go.Figure()
        for i, (rnd, g) in enumerate(pv.groupby("round")):
            sd = g["predicted_sd"] if "predicted_sd" in g else None
            # Error bars: the predictor's own interval (±1 sd) where it has a posterior.
            err = None if sd is None or sd.isna().all() else dict(type="data", array=sd.fillna(0).tolist(), visible=True)
            verify = "purpose" in g and (g["purpose"] == "verify").all()
            fig.add_scatter(x=g["predicted"], y=g["score"], mode="markers", error_x=err,
                            name="final (verification)" if verify else f"round {rnd}",
                            marker=dict(size=11 if verify else 8, symbol="star" if verify else "circle",
                                        color=w.PALETTE[i % len(w.PALETTE)]), hovertext=g["run_id"].map(w.esc))
        if not pv.empty:
            lo = float(min(pv["predicted"].min(), pv["score"].min()))
            hi = float(max(pv["predicted"].max(), pv["score"].max()))
            fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(dash="dash", color="#888"))
        fig.update_layout(title="Predicted vs actual", xaxis_title="predicted", yaxis_title="actual", height=340,
                          margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, key="pred_actual")
        if pv.empty:
            st.caption("Predictions appear from the second round on.")
    with c2:
        curve = queries.best_so_far(runs)
        series = {"best so far": (curve["proxies_trained"], curve["best"]),
                  "each run": (curve["proxies_trained"], curve["score"])}
        if not warm.empty and len(curve):
            top = float(warm["score"].max())
            series["best warm run (trained elsewhere)"] = ([1, int(curve["proxies_trained"].max())], [top, top])
        st.plotly_chart(w.line_chart(series,
                                     "Best so far vs proxies trained", "proxies trained", "score"), key="best")

    c3, c4 = st.columns(2)
    with c3:
        if not reports.empty and reports[["spearman", "r2"]].notna().any().any():
            st.plotly_chart(w.line_chart({"Spearman": (reports["round"], reports["spearman"]),
                                          "R²": (reports["round"], reports["r2"])},
                                         "Predictor quality per round", "round", "value"), key="spearman")
        else:
            st.caption("Predictor quality (cross-validated Spearman and R²) appears once a round has enough runs.")
    with c4:
        imp = reports["importance"].iloc[-1] if not reports.empty else None
        imp = np.nan_to_num(np.asarray(imp, dtype=float)) if isinstance(imp, (list, tuple, np.ndarray)) else None
        if imp is not None and len(imp) == len(names) and imp.any():
            st.plotly_chart(w.weights_bars({f"round {reports['round'].iloc[-1]}": imp}, names,
                                           "Per-cluster importance (latest predictor)", y_title="importance"), key="importance")

    if not reports.empty and "predictor" in reports:
        st.markdown("**Predictor per round** (every candidate is cross-validated on the runs so far; "
                    "a flat one is never used to rank)")
        table = []
        for r in reports.itertuples():
            cands = json.loads(r.candidates_json) if isinstance(r.candidates_json, str) else []
            cv = ", ".join(f"{c['name']} {c['spearman']:.2f}" if c.get("spearman") is not None
                           else f"{c['name']} n/a" for c in cands)
            table.append({"round": int(r.round), "runs seen": int(r.n_train), "chosen": r.predictor,
                          "CV Spearman": r.spearman, "CV R²": r.r2, "flat": r.flat,
                          "all candidates (CV Spearman)": cv, "why": r.reason, "proposals": r.method})
        st.dataframe(pd.DataFrame(table), hide_index=True)

    top = done.sort_values("score", ascending=False).head(3)
    mixes = {f"run {r.run_id} ({r.score:.4f})": list(r.weights) for r in top.itertuples()}
    if info.get("final_weights"):
        mixes = {"final": info["final_weights"], **mixes}
    if info.get("prior"):
        mixes["token prior"] = info["prior"]
    if mixes and names and all(len(v) == len(names) for v in mixes.values()):
        st.plotly_chart(w.weights_bars(mixes, names, "Weights of the best mixtures"), key="weights")
        scale = search_final_scale(ws, sid)
        w.final_scale_table({k: (v, scale) for k, v in mixes.items() if k != "token prior"}, ids_, labels,
                            key="rounds_epochs")

    transfer = rank_transfer(ws, sid)
    if transfer:
        rho = transfer["spearman"]
        st.markdown(w.md(f"Scaling mode: {transfer['runs']} of the best mixtures retrained at {transfer['tokens']:,} "
                         "tokens; rank correlation between the two scales (Spearman) "
                         + ("n/a (under 3 pairs)" if rho is None else f"{rho:.2f}")))
        fig = go.Figure()
        fig.add_scatter(x=transfer["small_scores"], y=transfer["large_scores"], mode="markers", name="retrained mixtures")
        fig.update_layout(title="The same mixtures at the proxy's scale and at the larger scale",
                          xaxis_title="score at the proxy's scale", yaxis_title="score at the larger scale", height=320,
                          margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, key="scale_transfer")

    with st.expander("All runs"):
        st.dataframe(every.drop(columns=["weights"]), hide_index=True)


running = _is_running()
if running:
    st.caption("Live: refreshing every 2 seconds while the search runs.")


def _live() -> None:
    _draw()
    if running and not _is_running():
        st.rerun()


st.fragment(_live, run_every=2 if running else None)()
