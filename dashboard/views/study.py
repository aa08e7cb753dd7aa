"""Study: every strategy on one target, finals re-trained as a larger model; launch one, read its report."""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from climb_core import jobs
from climb_core.config import ConfigError, validate
from climb_core.search import list_studies, study_report
from climb_core.search.study import report_figures
from climb_core.proxy.targets import TargetError, validate_targets
from dashboard import widgets as w

ws = w.workspace()
st.title("Study")
st.caption("Does the searched mixture beat simple choices on a larger model? A study runs each strategy on one "
           "target and budget over several seeds, re-trains every final mixture as the final model, and reports "
           "the mean and spread per strategy. Targets, budget and proxy come from the workspace's search settings.")
if flash := st.session_state.pop("study_flash", None):
    st.success(flash)

base = ws.load_config()
with st.form("new_study"):
    name = st.text_input("Study name (optional)")
    c1, c2, c3 = st.columns(3)
    strategies = c1.multiselect("Strategies", ["climb", "regmix", "random", "uniform", "natural"],
                                default=base.study.strategies)
    predictors = c2.multiselect("CLIMB predictors (one CLIMB arm each)", ["auto", "loglinear", "gp", "lightgbm"],
                                default=base.study.predictors)
    seeds = c3.number_input("Search seeds per strategy", 1, 20, base.study.seeds)
    c4, c5, c6 = st.columns(3)
    final_kind = c4.selectbox("Final model", ["gpt", "ngram"], index=0 if base.study.final_kind == "gpt" else 1)
    multiple = c5.number_input("Final tokens (× proxy tokens)", 1.0, 100.0, float(base.study.final_token_multiple))
    final_seeds = c6.number_input("Final-model seeds", 1, 10, base.study.final_seeds)
    st.caption(w.md(f"Budget {base.search.budget} proxy runs per search, {base.proxy.kind} proxies on "
                    f"{base.proxy.tokens:,} tokens; targets: "
                    + (", ".join(s.name or s.path for s in base.target.specs) or "none set (set them on Search)")))
    go_ = st.form_submit_button("Start study", type="primary")
if go_:
    if not strategies or not base.target.specs:
        st.error("Choose at least one strategy, and set a target on the Search page first.")
    else:
        cfg = dataclasses.replace(base, study=dataclasses.replace(
            base.study, strategies=list(strategies), predictors=list(predictors) or ["auto"], seeds=int(seeds),
            final_kind=final_kind, final_token_multiple=float(multiple), final_seeds=int(final_seeds)))
        try:
            # The same checks as `climb study`: every key in its range, every target readable.
            validate(cfg)
            validate_targets(ws, cfg.target.specs)
            sid = jobs.start_study_job(ws, cfg, name or None)
        except (ConfigError, TargetError) as err:
            st.error(str(err))
        except Exception as err:  # noqa: BLE001 - shown to the user
            st.error(f"{type(err).__name__}: {err}")
        else:
            st.session_state["study_pick"] = sid
            st.session_state["study_flash"] = f"Study {sid} started in the background."
            st.rerun()

studies = list_studies(ws)
if studies.empty:
    st.info("No studies yet. Start one above, or run `climb study WORKSPACE --target ...`.")
    st.stop()
ids = studies["study_id"].tolist()
want = st.session_state.get("study_pick")
sid = st.selectbox("Study", ids, index=ids.index(want) if want in ids else 0,
                   format_func=lambda s: f"{studies.set_index('study_id').loc[s, 'name']} · "
                                         f"{studies.set_index('study_id').loc[s, 'status']} ({s})")
rep = study_report(ws, sid)
# The labels are Markdown; the status, message and verdict (which can quote cluster labels and paths) are escaped.
st.markdown(f"**Status:** {w.md(rep['status'])} — {w.md(rep.get('message') or '')}")
st.markdown(f"**Verdict:** {w.md(rep['verdict'])}")
tr = rep.get("transfer") or {}
if tr.get("warning"):
    st.warning(w.md(tr["warning"]))
fm = rep["final_model"]
st.caption(w.md(f"Final model: {fm['kind']} on {fm['tokens']:,} tokens, {fm['seeds']} seeds; budget {rep['budget']}."))
rows = []
for s in rep["strategies"].values():
    rows.append({"strategy": s["label"], "final score (mean)": s.get("final_mean"), "spread (sd)": s.get("final_sd"),
                 "spread over": s.get("final_sd_over"), "searches": len(s["searches"]), "finals trained": s.get("n_final")})
if rows:
    st.dataframe(pd.DataFrame(rows).sort_values("final score (mean)", ascending=False), hide_index=True)
if tr.get("strategies"):
    st.markdown("**Transfer: proxy scale vs final scale**")

    def _rho(v) -> str:
        return "– (fewer than 3)" if v is None else f"{v:.2f}"

    st.caption(w.md(f"Each search's final mixture scored on the proxies (verified, else its best run) against the final "
                    f"model's mean. Spearman's rho over {tr['n_searches']} searches: {_rho(tr['spearman_searches'])}; "
                    f"over {tr['n_strategies']} strategies' means: {_rho(tr['spearman_strategies'])}. {tr['rule']}"))
    st.dataframe(pd.DataFrame([{"strategy": p["label"], "proxy score (mean)": p["proxy_mean"],
                                "final score (mean)": p["final_mean"], "final spread (sd)": p.get("final_sd"),
                                "searches": p["n"]} for p in tr["strategies"]]),
                 hide_index=True, key="study_transfer")
scale = rep.get("final_scale")
if scale and rep.get("cluster_ids"):
    w.final_scale_table({s["label"]: (s.get("mean_weights"), scale) for s in rep["strategies"].values()},
                        rep["cluster_ids"], [str(x) for x in rep.get("cluster_labels") or []], key="study_epochs")
for i, fig in enumerate(report_figures(rep)):
    st.plotly_chart(fig, key=f"study_fig_{i}")
