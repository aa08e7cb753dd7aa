"""Search: configure and launch a mixture search as a background worker; cancel, resume, follow."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import streamlit as st

from climb_core import jobs, queries
from climb_core.catalogue.stages import StageError
from climb_core.config import ConfigError, TargetSpec, validate
from climb_core.proxy.targets import TargetError, validate_targets
from dashboard import widgets as w

ws = w.workspace()
st.title("Search")
if flash := st.session_state.pop("search_flash", None):
    st.success(flash)

base = ws.load_config()
eval_files = sorted((w.REPO / "data" / "eval").glob("*.jsonl"))
default_mc = [Path(s.path).stem for s in base.target.specs if s.kind == "mc"]
text_default = "\n".join(s.path for s in base.target.specs if s.kind == "text")

with st.form("new_search"):
    st.subheader("New search")
    name = st.text_input("Name (optional)")
    t1, t2 = st.columns([3, 2])
    mc = t1.multiselect("Multiple-choice targets (bundled)", [p.stem for p in eval_files],
                        default=[s for s in default_mc if s in {p.stem for p in eval_files}])
    metric = t2.selectbox("Metric", ["loglik", "acc_norm", "acc"], help="loglik is continuous: best for small proxies.")
    text_targets = st.text_area("Text targets, one per line (a file, `cluster:ID` or `query:SQL predicate`)",
                                value=text_default, height=70)
    max_items = st.number_input("Items per target", 10, 100_000, base.target.specs[0].max_items if base.target.specs else 300)

    s1, s2, s3, s4 = st.columns(4)
    strategies = ["climb", "regmix", "random", "uniform", "natural"]
    strategy = s1.selectbox("Strategy", strategies, index=strategies.index(base.search.strategy) if base.search.strategy in strategies else 0)
    budget = s2.number_input("Budget (proxy runs)", 1, 10_000, base.search.budget)
    rounds = s3.number_input("Rounds", 0, 20, base.search.rounds,
                             help="0 = by budget: 3 rounds at 4:2:1 from 20 exploration runs, else 2 at 1:1.")
    split = s4.text_input("Budget split per round", ",".join(map(str, base.search.round_split)),
                          help="e.g. 4,2,1; empty = by budget.")
    s5, s6, s7, s8 = st.columns(4)
    predictors = ["auto", "loglinear", "gp", "lightgbm"]
    predictor = s5.selectbox("Predictor", predictors, index=predictors.index(base.search.predictor)
                             if base.search.predictor in predictors else 0,
                             help="auto: each round, the predictor with the best cross-validated Spearman on the runs so far.")
    acquisition = s6.selectbox("Acquisition", ["thompson", "ei"], index=0 if base.search.acquisition == "thompson" else 1,
                               help="thompson: each proposal is the optimum of one posterior draw; ei: expected improvement.")
    verify_seeds = s7.number_input("Verification runs of the final", 0, 10, base.search.verify_seeds,
                                   help="Counted in the budget. The final is kept only if it verifies at least as well as the best run.")
    pool_samples = s8.number_input("Candidates per round", 100, 1_000_000, base.search.n_pool_samples, step=1000)
    s9, s10, s11, _s12 = st.columns(4)
    seed = s9.number_input("Seed", 0, 2**31 - 1, base.search.seed)
    workers = s10.number_input("Parallel proxies", 1, 64, base.search.workers)
    designs = ["cover", "random"]
    design = s11.selectbox("First round (climb)", designs, index=designs.index(base.search.initial_design)
                           if base.search.initial_design in designs else 0,
                           help="cover: Dirichlet draws picked so every cluster gets a large share in some run; "
                                "random: i.i.d. draws, as in the paper.")

    st.markdown("**Proxy**")
    p1, p2, p3, p4 = st.columns(4)
    kinds = ["ngram", "gpt", "command"]
    kind = p1.selectbox("Proxy kind", kinds, index=kinds.index(base.proxy.kind) if base.proxy.kind in kinds else 0,
                        help="command: your own trainer, run once per proxy run on a job folder (docs/command-proxies.md).")
    size = p2.selectbox("GPT size (layers × width)", ["2×128", "4×256", "6×384", "12×768"], index=0)
    tokens = p3.number_input("Tokens per proxy", 1000, 10_000_000_000, base.proxy.tokens, step=10_000)
    device = p4.selectbox("Device", ["auto", "cpu", "cuda"], index=["auto", "cpu", "cuda"].index(base.proxy.device)
                          if base.proxy.device in ("auto", "cpu", "cuda") else 0)

    c1, c2, c3 = st.columns([3, 1, 1])
    command = c1.text_input("Command template (command proxies; {job} = the run's job folder)", base.proxy.command,
                            placeholder="python examples/hf_proxy/train.py {job} --layers 2 --d-model 64")
    executors = ["auto", "local", "process", "ray", "slurm"]
    executor = c2.selectbox("Executor", executors, index=executors.index(base.search.executor)
                            if base.search.executor in executors else 0,
                            help="Where proxy runs go: process runs 'Parallel proxies' at once; slurm uses [slurm] settings.")
    timeout = c3.number_input("Command timeout (s, 0 = none)", 0.0, 10.0**7, float(base.proxy.command_timeout_s))
    lm_eval_text = st.text_area("lm-eval targets, one per line (TASK[,metric=acc_norm][,weight=W])", "", height=70,
                                placeholder="climb_arc_easy,metric=acc_norm")

    st.markdown("**Dirichlet sampling**")
    d1, d2, d3 = st.columns(3)
    temperature = d1.slider("Temperature on the token prior", 0.05, 2.0, float(base.mixture.temperature), 0.05)
    conc = d2.select_slider("Concentration range", options=[0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0],
                            value=(base.mixture.min_concentration if base.mixture.min_concentration in
                                   (0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0) else 0.1,
                                   base.mixture.max_concentration if base.mixture.max_concentration in
                                   (0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0) else 5.0))
    cap = d3.slider("Cap (× prior)", 1.0, 50.0, float(base.mixture.cap_multiple), 0.5)

    st.markdown("**Constraints** (every strategy, every proposal and the final respect them)")
    k1, k2, k3 = st.columns(3)
    min_weight = k1.number_input("Minimum non-zero weight", 0.0, 0.5, float(base.mixture.min_weight), format="%.4f")
    max_epochs = k2.number_input("Max epochs per cluster (0 = no cap)", 0.0, 1000.0, float(base.mixture.max_epochs),
                                 help="Repetition cap: no cluster's training tokens are seen more than this many times "
                                      "when the final model trains on the final training tokens.")
    final_tokens = k3.number_input(
        "Final training tokens (0 = export size)", 0, 10**13, int(base.mixture.final_tokens), step=1_000_000,
        help="The final scale: how many tokens the model this mixture is for trains on. The repetition cap and the "
             "epochs per cluster on Rounds, Compare and Export are taken here. 0: the export's size "
             "(or the corpus's training tokens when the export is larger); a study sets its final model's tokens.")
    f1, f2, f3 = st.columns(3)
    final_repetition = f1.checkbox(
        "Proxies repeat data as the final model will", bool(base.proxy.final_repetition),
        help="Each proxy run draws a cluster's share from a pool of that cluster scaled down by proxy tokens / "
             "final training tokens, so a cluster the final model sees k times is seen k times by the proxy too.")
    scale_runs = f2.number_input(
        "Runs at a larger scale (0 = off)", 0, 1000, int(base.search.scale_runs),
        help="Scaling mode (climb): this many of the budget's runs retrain the best mixtures at the larger scale; "
             "the final is proposed for the final training tokens and verified at the larger scale.")
    scale_multiple = f3.number_input("Larger scale (× proxy tokens)", 1.5, 1000.0, float(base.search.scale_multiple),
                                     step=0.5)
    k4, k5 = st.columns(2)
    pinned = k4.text_input("Pinned clusters (ID=WEIGHT, comma-separated)", ",".join(base.mixture.pinned))
    excluded = k5.text_input("Excluded clusters (IDs, comma-separated)", ",".join(map(str, base.mixture.excluded)))
    offers = queries.warm_start_offers(ws)
    warm_pick: list[str] = []
    if not offers.empty:
        st.markdown("**Warm start** (earlier searches' runs train the predictor from round 1; only new runs "
                    "count in the budget)")
        changed = offers[offers["clusters_changed"]]
        if not changed.empty:
            st.info(f"The clusters changed since {len(changed)} finished search(es); their runs can be carried to "
                    "the current clusters through the edits (merged weights add, split ones follow the token shares, "
                    "runs leaning more than 5% on a pruned cluster are dropped).")
        st.dataframe(offers.rename(columns={"runs": "runs trained", "clusters_changed": "clusters edited since"}),
                     hide_index=True)
        warm_pick = st.multiselect(
            "Warm-start from", offers["search_id"].tolist(),
            # Nothing is picked for the user: a source scored with other settings would be refused
            # at launch, and which runs to learn from is the researcher's call.
            default=[],
            format_func=lambda s: (lambda r: f"{r['name'] or s} [{r['strategy']}]: {r['reused']} reused, "
                                            f"{r['remapped']} remapped, {r['dropped']} dropped")(
                offers.set_index("search_id").loc[s]))
    launch = st.form_submit_button("Launch search", type="primary")

if launch:
    specs = [TargetSpec(kind="mc", path=str(w.REPO / "data" / "eval" / f"{m}.jsonl"), name=m, metric=metric,
                        max_items=int(max_items)) for m in mc]
    specs += [TargetSpec(kind="text", path=line.strip(), metric="neg_bpb", max_items=int(max_items))
              for line in text_targets.splitlines() if line.strip()]
    from climb_core.proxy.targets import parse_target

    lm_eval_specs = []
    for line in lm_eval_text.splitlines():
        if line.strip():
            spec = parse_target("lm-eval:" + line.strip())
            spec.max_items = int(max_items) if ",max_items=" not in line else spec.max_items
            lm_eval_specs.append(spec)
    specs += lm_eval_specs
    try:
        round_split = [int(x) for x in split.replace(":", ",").split(",") if x.strip()]
    except ValueError:
        round_split = None
    layers, width = (int(v) for v in size.split("×"))
    try:
        excluded_ids = [int(x) for x in excluded.split(",") if x.strip()]
    except ValueError:
        excluded_ids = None
    if excluded_ids is None:
        st.error("Excluded clusters must be cluster IDs such as 3,7.")
    elif not specs:
        st.error("Choose at least one target.")
    elif kind == "command" and "{job}" not in command:
        st.error("A command proxy needs a command template with {job} in it.")
    elif round_split is None or any(v <= 0 for v in round_split):
        st.error("Budget split must be positive integers such as 4,2,1 (or empty: by budget).")
    else:
        cfg = dataclasses.replace(
            base,
            search=dataclasses.replace(base.search, strategy=strategy, budget=int(budget), rounds=int(rounds),
                                       round_split=round_split, n_pool_samples=int(pool_samples),
                                       predictor=predictor, acquisition=acquisition, verify_seeds=int(verify_seeds),
                                       initial_design=design, scale_runs=int(scale_runs),
                                       scale_multiple=float(scale_multiple),
                                       seed=int(seed), workers=int(workers), name=name or base.search.name,
                                       executor=executor),
            proxy=dataclasses.replace(base.proxy, kind=kind, tokens=int(tokens), device=device, n_layer=layers,
                                      n_embd=width, n_head=max(1, width // 64), command=command.strip(),
                                      command_timeout_s=float(timeout), final_repetition=bool(final_repetition)),
            mixture=dataclasses.replace(base.mixture, temperature=float(temperature), min_concentration=float(conc[0]),
                                        max_concentration=float(conc[1]), cap_multiple=float(cap),
                                        min_weight=float(min_weight), max_epochs=float(max_epochs),
                                        final_tokens=int(final_tokens), excluded=excluded_ids,
                                        pinned=[p.strip() for p in pinned.split(",") if p.strip()]),
            target=dataclasses.replace(base.target, specs=specs),
        )
        try:
            # The same checks as `climb search`: every key in its range, every target readable.
            validate(cfg)
            validate_targets(ws, cfg.target.specs)
            if warm_pick:
                # Refused settings (other targets or proxy) show here, not in the worker's log.
                from climb_core.search.warm import plan_warm_start

                plan_warm_start(ws, json.dumps(cfg.to_dict()), json.dumps([dict(vars(t)) for t in cfg.target.specs]),
                                sorted(int(c) for c in queries.cluster_table(ws, ["active"])["cluster_id"]), warm_pick)
            sid = jobs.start_search_job(ws, cfg, name or None, warm_start=warm_pick)
        except (ConfigError, TargetError) as err:
            st.error(str(err))
        except Exception as err:  # noqa: BLE001 - shown to the user
            st.error(f"{type(err).__name__}: {err}")
        else:
            st.session_state["rounds_search"] = sid
            st.session_state["search_flash"] = f"Search {sid} started in the background; follow it on Rounds."
            st.rerun()


def _searches() -> None:
    st.subheader("Searches")
    df = queries.searches(ws)
    if df.empty:
        st.caption("No searches yet.")
        return
    df = df.assign(progress=[f"{r.runs_finished}/{int(r.budget) if r.budget == r.budget and r.budget is not None else '?'}"
                             for r in df.itertuples()])
    st.dataframe(df[["search_id", "name", "strategy", "status", "progress", "best_score", "last_round", "message",
                     "created_at"]], hide_index=True)
    sid = st.selectbox("Search", df["search_id"].tolist(), key="search_pick")
    row = df[df["search_id"] == sid].iloc[0]
    job = jobs.job_for_search(ws, sid)
    now_running = not jobs.running_jobs(ws, "search").empty
    if running and not now_running:  # a worker ended: redraw the page without the refresh timer
        st.rerun()
    worker_running = job is not None and job["status"] in ("running", "cancelling")
    b1, b2, b3, b4 = st.columns(4)
    if b1.button("Stop after the current run", disabled=not worker_running and row["status"] != "running"):
        from climb_core.search import cancel_search

        cancel_search(ws, sid)
        st.rerun()
    if b2.button("Resume", disabled=worker_running or row["status"] in ("done", "finished")):
        try:
            jobs.resume_search_job(ws, sid)
        except StageError as err:  # a stale pipeline: the message names the stage and the command to run
            st.error(str(err))
        else:
            st.rerun()
    if b3.button("Kill worker", disabled=not worker_running):
        jobs.cancel_job(ws, job["job_id"])
        st.rerun()
    if b4.button("Open rounds"):
        st.session_state["rounds_search"] = sid
        st.switch_page("views/rounds.py")
    if job is not None:
        with st.expander(f"Worker log ({job['status']})", expanded=worker_running):
            w.log_box(jobs.log_tail(ws, job["job_id"], n_lines=30))


running = not jobs.running_jobs(ws, "search").empty
st.fragment(_searches, run_every=2 if running else None)()
