"""The `climb` command: parses flags into a ClimbConfig, calls the engine, prints what happened.

Every stage command reads WORKSPACE/climb.toml, applies the keys of --config FILE and its flags on top,
and saves the result back once the stage succeeds, so the workspace's config file always records how
its contents were built.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from climb_core.catalogue.liveness import Interrupted, sigterm_raises
from climb_core.catalogue.stages import StageError
from climb_core.catalogue.workspace import Workspace, WorkspaceError
from climb_core.config import (ClimbConfig, ConfigError, dump_toml, load_config, reference_markdown, validate,
                               with_overrides)
from climb_core.pipeline.registry import PIPELINE, STAGES
from climb_core.proxy.targets import parse_target

REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("climb_core.cli")

# flag dest -> dotted config key, per command. A flag left unset does not override the config file.
STAGE_FLAGS: dict[str, list[tuple[str, str, type, str]]] = {
    "ingest": [
        ("--format", "ingest.format", str, "auto, jsonl, parquet, csv, txt or hf"),
        ("--text-field", "ingest.text_field", str, "field holding the text"),
        ("--id-field", "ingest.id_field", str, "field holding the document id"),
        ("--cluster-field", "ingest.cluster_field", str, "field holding a ready-made cluster (skips embed and k-means)"),
        ("--batch-size", "ingest.batch_size", int, "records per batch"),
    ],
    "embed": [
        ("--model", "embed.model", str, "sentence-transformers model name or path"),
        ("--device", "embed.device", str, "auto, cpu or cuda"),
        ("--embed-batch-size", "embed.batch_size", int, "documents per encoder batch"),
        ("--max-seq-length", "embed.max_seq_length", int, "encoder tokens per document"),
    ],
    "cluster": [
        ("--k", "cluster.k", int, "number of k-means clusters (0 = auto)"),
        ("--backend", "cluster.backend", str, "auto, cuml, faiss or sklearn"),
        ("--niter", "cluster.niter", int, "k-means iterations"),
        ("--sample-size", "cluster.sample_size", int, "fit k-means on at most this many documents"),
    ],
    "refine": [
        ("--min-size", "prune.min_size", int, "prune clusters with fewer documents"),
        ("--min-quality", "prune.min_quality", float, "prune clusters with lower mean quality"),
        ("--target-clusters", "merge.target_clusters", int, "merge down to this many clusters"),
        ("--distance-threshold", "merge.distance_threshold", float, "or cut the Ward tree at this distance"),
    ],
    "describe": [
        ("--n-keywords", "describe.n_keywords", int, "keywords per cluster"),
    ],
    "map": [
        ("--max-points", "map.max_points", int, "documents projected to 2-D"),
        ("--n-neighbors", "map.n_neighbors", int, "UMAP n_neighbors"),
        ("--map-backend", "map.backend", str, "auto, cuml or umap"),
    ],
    "tokens": [
        ("--vocab-size", "tokenizer.vocab_size", int, "BPE vocabulary size"),
        ("--tokenizer", "tokenizer.path", str, "a tokenizer.json to use instead of training one"),
    ],
    "search": [
        ("--strategy", "search.strategy", str, "climb, regmix, random, uniform or natural"),
        ("--budget", "search.budget", int, "total proxy runs"),
        ("--rounds", "search.rounds", int, "bootstrap rounds (climb; 0 = by budget)"),
        ("--round-split", "search.round_split", str, "relative budget per round, e.g. 4,2,1 (default: by budget)"),
        ("--executor", "search.executor", str, "auto, local, process, ray or slurm"),
        ("--workers", "search.workers", int, "parallel proxy runs"),
        ("--proxy", "proxy.kind", str, "ngram (fast), gpt, or command (your own trainer: --proxy-command)"),
        ("--proxy-command", "proxy.command", str, "command proxies: shell template run per proxy run, {job} = its job folder"),
        ("--command-timeout", "proxy.command_timeout_s", float, "command proxies: seconds before a run is killed (0 = none)"),
        ("--lm-eval-include", "target.lm_eval_include", str, "folders of your own lm-eval task YAMLs (comma-separated)"),
        ("--slurm-cluster", "slurm.cluster", str, "--executor slurm: slurm, or local to run the jobs here"),
        ("--partition", "slurm.partition", str, "--executor slurm: partition"),
        ("--gpus-per-run", "slurm.gpus_per_run", int, "--executor slurm: GPUs per proxy run"),
        ("--time-min", "slurm.time_min", int, "--executor slurm: time limit per run in minutes"),
        ("--sbatch", "slurm.extra_sbatch", str, "--executor slurm: extra sbatch flags, e.g. account=proj,qos=high"),
        ("--proxy-tokens", "proxy.tokens", int, "training tokens per proxy"),
        ("--proxy-device", "proxy.device", str, "auto, cpu or cuda"),
        ("--n-layer", "proxy.n_layer", int, "GPT layers"),
        ("--n-embd", "proxy.n_embd", int, "GPT width"),
        ("--temperature", "mixture.temperature", float, "temperature on the token prior"),
        ("--cap-multiple", "mixture.cap_multiple", float, "cap per cluster as a multiple of its prior"),
        ("--predictor", "search.predictor", str, "auto (best by cross-validation each round), loglinear, gp or lightgbm"),
        ("--acquisition", "search.acquisition", str, "thompson or ei"),
        ("--initial-design", "search.initial_design", str, "climb's first round: cover (every cluster tried at a large share) or random"),
        ("--verify-seeds", "search.verify_seeds", int, "training runs of the final mixture (in the budget)"),
        ("--min-weight", "mixture.min_weight", float, "every weight is 0 or at least this"),
        ("--max-epochs", "mixture.max_epochs", float, "repetition cap: epochs per cluster at --final-tokens"),
        ("--final-tokens", "mixture.final_tokens", int, "final training tokens, where --max-epochs and --final-repetition apply (0 = export.tokens; a study sets its final model's)"),
        ("--final-repetition", "proxy.final_repetition", str, "true/false: proxies draw each cluster from a pool scaled by proxy tokens / final tokens, so they repeat clusters as the final model will"),
        ("--scale-runs", "search.scale_runs", int, "scaling mode (climb): runs of the budget that retrain the best mixtures at --scale-multiple x the proxy's tokens"),
        ("--scale-multiple", "search.scale_multiple", float, "scaling mode: the larger scale's tokens as a multiple of --proxy-tokens"),
        ("--pin", "mixture.pinned", str, "clusters held at a weight, e.g. 3=0.1,5=0.05"),
        ("--exclude", "mixture.excluded", str, "clusters given no weight, e.g. 4,9"),
    ],
}
STAGE_FLAGS["study"] = [
    ("--strategies", "study.strategies", str, "strategies to compare, e.g. climb,regmix,random,uniform,natural"),
    ("--predictors", "study.predictors", str, "climb runs once per predictor, e.g. auto,loglinear"),
    ("--seeds", "study.seeds", int, "search seeds per strategy"),
    ("--final-kind", "study.final_kind", str, "proxy kind of the final model (gpt or ngram)"),
    ("--final-multiple", "study.final_token_multiple", float, "final model tokens as a multiple of --proxy-tokens"),
    ("--final-seeds", "study.final_seeds", int, "training seeds per final model"),
]
SEED_FLAG = {"cluster": "cluster.seed", "map": "map.seed", "search": "search.seed", "tokens": "tokenizer.seed"}
# Old spellings of renamed config flags: still accepted (hidden from --help) with a note on stderr,
# so scripts written against them keep working.
RENAMED_FLAGS = {"--proxy-tokens": "--tokens"}

# The top-level keys of each command's --json object; docs/cli-json.md describes them and the
# tests check both the output and that page against this table.
JSON_KEYS: dict[str, tuple[str, ...]] = {
    "status": ("workspace", "stages", "documents", "tokens_est", "rejected", "base_clusters", "clusters",
               "edits", "active_clusters", "searches"),
    "runs": ("workspace", "searches"),
    "search": ("search_id", "name", "strategy", "status", "message", "config", "target", "cluster_ids",
               "cluster_labels", "runs", "best_run", "final", "final_weights", "final_scale", "scaling"),
    "study": ("study_id", "name", "status", "message", "target", "budget", "proxy", "final_model", "final_scale",
              "cluster_ids", "cluster_labels", "strategies", "comparisons", "verdict", "transfer", "scaling", "report_dir"),
    "export": ("export_id", "search_id", "source", "out_dir", "requested_tokens", "tokens", "docs", "weights",
               "cluster_ids", "cluster_labels", "clusters", "files", "formats", "held_out", "max_share_deviation",
               "trainer_data"),
    "decontam": ("n", "n_docs", "evals", "clusters", "flagged_doc_ids", "recorded"),
}


class CliError(RuntimeError):
    """A runtime error the user can act on: `error: ...` on stderr, exit 1."""


class UsageError(CliError):
    """Flags that do not fit together (or a required one missing): the command's usage, exit 2."""


class DeprecatedAlias(argparse.Action):
    """An old spelling of a renamed flag or argument: stores into the new one's dest and leaves a note
    that main() logs once logging is set up (argparse runs this before -q/-v are known)."""

    def __init__(self, option_strings, dest, *, new: str, into: str | None = None, **kwargs):
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.new = new
        self.into = into or dest  # a positional's dest is its name, so it says where the value goes

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:  # an optional positional left out
            return
        setattr(namespace, self.into, values)
        old = option_string or f"a positional {self.metavar or self.dest.upper()}"
        notes = list(getattr(namespace, "deprecated_notes", []))
        notes.append(f"{old} is deprecated; use {self.new}")
        namespace.deprecated_notes = notes


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _add_config_flags(p: argparse.ArgumentParser, stages: list[str]) -> None:
    p.add_argument("--config", help="a TOML or YAML config file to apply on top of the workspace's climb.toml")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key (repeatable), e.g. --set cluster.niter=50")
    for stage in stages:
        for flag, _key, typ, help_text in STAGE_FLAGS.get(stage, []):
            p.add_argument(flag, type=typ, default=None, help=help_text)
            if flag in RENAMED_FLAGS:
                p.add_argument(RENAMED_FLAGS[flag], dest=_dest(flag), type=typ, default=None,
                               action=DeprecatedAlias, new=flag)
        if stage in SEED_FLAG and not any(a.dest == "seed" for a in p._actions):
            p.add_argument("--seed", type=int, default=None, help="random seed")


def _overrides(args: argparse.Namespace, stages: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in stages:
        for flag, key, _typ, _h in STAGE_FLAGS.get(stage, []):
            out[key] = getattr(args, _dest(flag), None)
        if stage in SEED_FLAG and getattr(args, "seed", None) is not None:
            out[SEED_FLAG[stage]] = args.seed
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _resolve_config(ws: Workspace, args: argparse.Namespace, stages: list[str]) -> ClimbConfig:
    """The workspace's config, then the keys --config FILE sets (tables merge key by key), then flags.

    Nothing is saved here: stages save it with `_save_config` once they succeed, searches and
    studies keep theirs with the search and leave the workspace's defaults alone."""
    config = ws.load_config()
    if getattr(args, "config", None):
        config = load_config(args.config, base=config)
    config = with_overrides(config, _overrides(args, stages))
    inputs = getattr(args, "input", None)
    if inputs:
        config.ingest.paths = [str(Path(p).resolve()) for p in inputs]
    targets = getattr(args, "target", None)
    if targets:
        config.target.specs = [parse_target(t) for t in targets]
    metric = getattr(args, "metric", None)
    if metric:
        for spec in config.target.specs:
            if spec.kind == "mc":
                spec.metric = metric
    # --input, --target and --metric are set after with_overrides validated the rest.
    return validate(config)


def _save_config(ws: Workspace, config: ClimbConfig) -> None:
    """Record a config as the workspace's default; called only after the stages it ran with
    succeeded, so a failed run leaves climb.toml describing what the workspace was built with."""
    if config != ws.load_config():
        ws.save_config(config)


def _open(path: str) -> Workspace:
    return Workspace.open(path)


def _print(text: str) -> None:
    """A result line on stdout (messages about the work go to stderr through `log`)."""
    print(text, flush=True)


def _json_mode(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _say(args: argparse.Namespace, text: str) -> None:
    """A line of a human-readable result; with --json stdout holds only the JSON, so it goes to the log."""
    if _json_mode(args):
        log.info(text)
    else:
        _print(text)


def _emit_json(data: Any) -> None:
    _print(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------------------------- commands
def cmd_init(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else ClimbConfig()
    if args.input:
        config.ingest.paths = [str(Path(p).resolve()) for p in args.input]
    config = with_overrides(config, _overrides(args, list(STAGE_FLAGS)))
    ws = Workspace.init(args.workspace, config)
    _print(f"workspace ready: {ws.root}\n  config: {ws.config_path}\n  next: climb run-all {args.workspace}")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from climb_core.pipeline.run import run_stage

    ws = _open(args.workspace)
    config = _resolve_config(ws, args, [args.command])
    if args.command == "ingest" and not config.ingest.paths:
        raise CliError("no input: pass --input PATH (files or folders), or set ingest.paths in climb.toml")
    outcome = run_stage(ws, args.command, config, force=args.force, progress=not args.quiet)
    _save_config(ws, config)
    _print(outcome.summary())
    return 0


def cmd_run_all(args: argparse.Namespace) -> int:
    from climb_core.pipeline.run import run_all

    ws = Workspace.init(args.workspace) if not (Path(args.workspace) / "climb.duckdb").exists() else _open(args.workspace)
    config = _resolve_config(ws, args, list(STAGE_FLAGS))
    if not config.ingest.paths:
        raise CliError("no input: pass --input PATH (files or folders), or set ingest.paths in climb.toml")
    run_all(ws, config, force=args.force, progress=not args.quiet, on_stage=lambda o: _print(o.summary()))
    # Saved once every stage has run, so a run that stops part-way leaves climb.toml as it was.
    _save_config(ws, config)
    _print_status(ws)
    return 0


def _print_status(ws: Workspace) -> None:
    from climb_core.pipeline.run import workspace_status

    st = workspace_status(ws)
    _print(f"\nworkspace {st['workspace']}")
    for s in st["stages"]:
        _print(f"  {s['stage']:<9} {s['status']:<8} {s['message'] or ''}")
    _print(f"  documents {st['documents']}  (~{st['tokens_est']:,} tokens, estimated as chars/4)   rejected {st['rejected']['total']} "
           f"{st['rejected']['by_reason'] or ''}")
    c = st["clusters"]
    _print(f"  clusters: {st['base_clusters']} from k-means -> {c['active']} active, {c['pruned']} pruned, "
           f"{c['merged']} merged away; {st['edits']} edits")
    for row in st["active_clusters"][:25]:
        _print(f"    #{row['cluster_id']:<5} {row.get('size_docs') or 0:>7} docs  q={row.get('mean_quality')}  {row['label']}")
    for s in st["searches"]:
        # `status` is the shown one: a search whose worker died reads interrupted, as in `climb runs`.
        hint = (f" (its worker is gone; resume with `climb search {st['workspace']} --resume {s['search_id']}`)"
                if s["status"] == "interrupted" else "")
        msg = s["message"] or ""
        if msg.startswith(f"{s['status']}: "):   # searches recorded before the message stopped repeating it
            msg = msg[len(s["status"]) + 2:]
        _print(f"  search {s['search_id']} [{s['strategy']}] {s['status']}{hint}: {msg}")


def cmd_status(args: argparse.Namespace) -> int:
    from climb_core.pipeline.run import workspace_status

    ws = _open(args.workspace)
    if args.json:
        _emit_json(workspace_status(ws))
    else:
        _print_status(ws)
    return 0


def cmd_export_assignments(args: argparse.Namespace) -> int:
    ws = _open(args.workspace)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with ws.connect() as con:
        n = con.execute("SELECT count(*) FROM doc_clusters").fetchone()[0]
        if n == 0:
            raise StageError(f"no cluster assignments in {ws.root}; run `climb refine` (or `climb run-all`) first")
        con.execute(f"""
            COPY (
              SELECT d.doc_id, dc.cluster_id, c.label AS cluster_label, c.state AS cluster_state,
                     a.base_cluster, m.x, m.y
              FROM documents d
              JOIN doc_clusters dc USING (doc_idx)
              JOIN clusters c ON c.cluster_id = dc.cluster_id
              LEFT JOIN assignments a USING (doc_idx)
              LEFT JOIN map_coords m USING (doc_idx)
              ORDER BY d.doc_idx
            ) TO '{str(out).replace("'", "''")}' (FORMAT parquet)""")
    _print(f"wrote {n} rows to {out}")
    return 0


def _run_config(ws: Workspace, args: argparse.Namespace, kind: str, stages: list[str]) -> ClimbConfig:
    """A resumed search or study runs with the config stored with it; a new one with the resolved one."""
    if not args.resume:
        return _resolve_config(ws, args, stages)
    from climb_core.config import config_from_dict

    table = {"search": "searches", "study": "studies"}[kind]
    stored = ws.scalar(f"SELECT config_json FROM {table} WHERE {kind}_id = ?", [args.resume])
    if stored is None:
        hint = f"; `climb runs {args.workspace}` lists them" if kind == "search" else ""
        raise CliError(f"no {kind} {args.resume!r} in {ws.root}{hint}")
    log.info("resuming %s %s", kind, args.resume)
    return config_from_dict(json.loads(stored))


def _require_current(ws: Workspace, config: ClimbConfig) -> None:
    """Searches, studies and exports stand on the refined clusters: refuse, before anything is
    created, when a stage they come from is stale (the corpus was re-ingested, say)."""
    from climb_core.pipeline.run import require_current

    require_current(ws, "refine", config=config)


def cmd_search(args: argparse.Namespace) -> int:
    from climb_core.pipeline.run import run_stage
    from climb_core.search import create_search, run_search

    from climb_core.proxy.targets import validate_targets

    ws = _open(args.workspace)
    config = _run_config(ws, args, "search", ["search", "tokens"])
    _require_current(ws, config)
    search_id = args.resume
    if not args.resume:
        validate_targets(ws, config.target.specs)
    run_stage(ws, "tokens", config, progress=not args.quiet)
    if args.resume and (args.warm_start or args.warm_start_any):
        raise CliError("--warm-start is chosen when a search is created; a resumed search keeps its warm runs")
    if not args.resume:
        search_id = create_search(ws, config, name=args.name, search_id=args.search_id,
                                  warm_start=args.warm_start or [], warm_start_any=args.warm_start_any)
        _say(args, f"search {search_id} created")
        if args.warm_start:
            from climb_core.search.records import load_search
            from climb_core.search.warm import describe_warm, warm_info

            for line in describe_warm(warm_info(load_search(ws, search_id)) or {}):
                _say(args, line)
    summary = run_search(ws, search_id, progress=not args.quiet)
    from climb_core.search import search_report

    report = search_report(ws, search_id)
    if _json_mode(args):
        _emit_json(report)
    else:
        _print_search(report)
    if summary.status == "failed":
        message = ws.scalar("SELECT message FROM searches WHERE search_id = ?", [search_id])
        print(f"error: search {search_id} failed: {message}", file=sys.stderr)
        return 1
    if summary.status == "cancelled":
        return 0
    _say(args, f"next: climb export {args.workspace} --search {search_id} --out DIR   (or see it in `climb dashboard`)")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from climb_core.pipeline.run import run_stage
    from climb_core.search.study import create_study, report_markdown, run_study

    from climb_core.proxy.targets import validate_targets

    ws = _open(args.workspace)
    config = _run_config(ws, args, "study", ["search", "tokens", "study"])
    _require_current(ws, config)
    study_id = args.resume
    if not args.resume:
        validate_targets(ws, config.target.specs)
    run_stage(ws, "tokens", config, progress=not args.quiet)
    if not args.resume:
        study_id = create_study(ws, config, name=args.name, study_id=args.study_id)
        _say(args, f"study {study_id} created (continue it with --resume {study_id} if it stops)")
    rep = run_study(ws, study_id, progress=not args.quiet)
    if _json_mode(args):
        _emit_json(rep)
        # The human report prints it under the verdict; with --json it must still reach the reader.
        if (rep.get("transfer") or {}).get("warning"):
            log.warning(rep["transfer"]["warning"])
        return 0
    _print(report_markdown(rep))
    _print(f"report: {rep['report_dir']}/study.md, study.html, study.json")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from climb_core.search import list_searches, search_report

    if args.workspace == "import" and args.rest:
        return _runs_import(args)
    if args.rest:
        raise UsageError(f"unexpected argument(s) {' '.join(args.rest)}; import runs with `climb runs import WS FILE`")
    ws = _open(args.workspace)
    if args.csv is not None:
        from climb_core.search.imports import runs_csv

        if not args.search:
            raise UsageError("--csv exports one search: add --search ID")
        text = runs_csv(ws, args.search)
        if args.csv == "-":
            sys.stdout.write(text)
        else:
            Path(args.csv).write_text(text)
            _print(f"wrote {text.count(chr(10)) - 1} runs of search {args.search} to {args.csv}")
        return 0
    searches = list_searches(ws)
    ids = [args.search] if args.search else list(searches["search_id"]) if len(searches) else []
    if args.json:
        _emit_json({"workspace": str(ws.root), "searches": [search_report(ws, sid) for sid in ids]})
        return 0
    if not ids:
        _print("no searches yet: climb search WORKSPACE")
        return 0
    for sid in ids:
        _print_search(search_report(ws, sid))
    return 0


def _runs_import(args: argparse.Namespace) -> int:
    """`climb runs import WS FILE [--name NAME] [--map FILE]`: runs trained elsewhere as a finished search."""
    from climb_core.search.imports import import_runs

    if len(args.rest) != 2:
        raise UsageError("usage: climb runs import WORKSPACE FILE [--name NAME] [--map FILE] [--target ...]")
    ws = _open(args.rest[0])
    config = _resolve_config(ws, args, [])
    sid = import_runs(ws, args.rest[1], config=config, name=args.name, map_path=args.map)
    n = ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ?", [sid])
    _print(f"imported {n} runs from {args.rest[1]} as search {sid} (strategy imported)")
    _print(f"next: climb search {args.rest[0]} --warm-start {sid}")
    return 0


def _print_search(rep: dict[str, Any]) -> None:
    """A search as a person reads it: rounds, predictor quality, the best run, the final mixture."""
    _print(f"{rep['search_id']}  [{rep['strategy']}]  {rep['status']}  {rep.get('message') or ''}")
    by_round: dict[int, list[float]] = {}
    for run in rep.get("runs", []):
        if run["status"] == "done" and run["score"] is not None:
            by_round.setdefault(run["round"], []).append(run["score"])
    reports = {r["round"]: r for r in rep.get("predictor_reports", [])}
    verify_round = rep.get("verify_round")
    if rep.get("n_warm"):
        _print(f"   warm runs: {rep['n_warm']} from " + ", ".join(
            f"{src['search_id']} ({src['reused']} reused, {src['remapped']} remapped, {src['dropped']} dropped"
            + (", offset" if src.get("offset") else "") + ")" for src in (rep.get("warm_start") or {}).get("sources", [])))
    for rnd, scores in sorted(by_round.items()):
        if rnd == 0:
            continue  # warm runs, summarised above
        r = reports.get(rnd)
        sp = None if r is None else r.get("spearman")
        scale_round = rep.get("scale_round")
        name = ("verification" if rnd == verify_round else
                "larger scale" if rnd == scale_round else f"round {rnd}")
        chosen = "" if r is None else f"   predictor {r.get('predictor') or '?'}" + ("" if sp is None else f" (CV Spearman {sp:.2f})")
        _print(f"   {name}: {len(scores):>3} runs  mean {sum(scores) / len(scores):.4f}  best {max(scores):.4f}{chosen}")
    if rep.get("scaling") and rep["scaling"].get("spearman") is not None:
        _print(f"   the larger scale ranked the {rep['scaling']['pairs']} retrained mixtures with Spearman "
               f"{rep['scaling']['spearman']:.2f} against the proxy's scale")
    for run in rep.get("runs", []):
        if run["status"] == "running":
            _print(f"   running: {run['run_id']}")
        elif run["status"] == "failed" and run.get("error"):
            lines = str(run["error"]).rstrip().splitlines()
            _print(f"   failed: {run['run_id']}: {lines[0]}")
            for line in lines[1:][-10:]:  # the stderr tail a command proxy left
                _print(f"      | {line}")
    best = rep.get("best_run")
    if best:
        _print(f"   best trained run {best['run_id']}: score {best['score']:.4f}")
    final = rep.get("final") or {}
    if final.get("how"):
        pred = final.get("predicted")
        _print(f"   final: {final['how']}" + ("" if pred is None else f", predicted {pred:.4f}")
               + ("" if final.get("verified") is None else f", verified {final['verified']:.4f}")
               + (f" ({final['note']})" if final.get("note") else ""))
    weights = rep.get("final_weights")
    if weights:
        labels = rep.get("cluster_labels") or [str(c) for c in rep.get("cluster_ids", [])]
        top = sorted(zip(weights, labels, rep.get("cluster_ids", [])), reverse=True)[:8]
        _print("   final mixture (top clusters): " + ", ".join(f"#{c} {lab} {w:.1%}" for w, lab, c in top))
    scale = rep.get("final_scale") or {}
    proxy = (rep.get("config") or {}).get("proxy") or {}
    if scale.get("tokens"):
        epochs = [e for e in scale.get("epochs") or [] if e is not None]
        pools = (f"; proxies drew from {min(1.0, proxy['tokens'] / scale['tokens']):.0%} of each cluster to repeat "
                 "data as that model will" if proxy.get("final_repetition") and proxy.get("tokens") else "")
        _print(f"   final scale: {scale['tokens']:,} tokens, {scale.get('source')}"
               + (f", the final mixture's most repeated cluster {max(epochs):.2f} epochs" if epochs else "") + pools)


def cmd_cancel(args: argparse.Namespace) -> int:
    from climb_core.search import cancel_search

    if not args.search:
        raise UsageError("name the search to stop: climb cancel WORKSPACE --search SEARCH_ID")
    cancel_search(_open(args.workspace), args.search)
    _print(f"asked search {args.search} to stop after its current run; resume with "
           f"`climb search {args.workspace} --resume {args.search}`")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from climb_core.export.mixture import export_search, repeated_clusters, repetition_warning

    if not args.search:
        raise UsageError("name the search to export: --search SEARCH_ID (`climb runs WORKSPACE` lists them)")
    ws = _open(args.workspace)
    _require_current(ws, ws.load_config())
    out = Path(args.out).resolve()
    manifest = export_search(ws, args.search, out, tokens=args.dataset_tokens, config=ws.load_config(),
                             force=args.force, formats=args.formats, tokenizer=args.tokenizer,
                             sample=True if args.sample else None, progress=not args.quiet)
    for c in repeated_clusters(manifest):
        print(f"warning: {repetition_warning(c)}", file=sys.stderr)
    if _json_mode(args):
        if args.push_to_hub:
            from climb_core.export.formats import push_to_hub

            log.info("pushing %s to %s", out, args.push_to_hub)
            manifest = {**manifest, "pushed_to": push_to_hub(out, args.push_to_hub, private=args.private)}
        _emit_json({**manifest, "out_dir": str(out)})
        return 0
    _print(f"exported the {manifest['source']} of search {manifest['search_id']} to {out}: "
           f"{manifest['docs']:,} documents, {manifest['tokens']:,} tokens in {len(manifest['files'])} Parquet file(s)")
    for c in sorted(manifest["clusters"], key=lambda c: -c["weight"]):
        distinct = c.get("distinct_docs", c["docs"])
        repeat = (f", repeated {c['epochs']:.1f}x ({distinct:,} distinct documents)"
                  if c["epochs"] > 1 or distinct < c["docs"] else "")
        _print(f"   #{c['cluster_id']:<5} weight {c['weight']:6.1%} share {c['share']:6.1%}  {c['docs']:>6} docs  "
               f"{c['tokens']:>9,} tokens{repeat}  {c['label']}")
    trainer = manifest.get("trainer_data")
    if trainer:
        valid = trainer.get("valid") or {}
        _print(f"   Megatron-LM/NeMo data ({trainer['documents']}, tokenizer {trainer['tokenizer']['name']}): "
               f"{sum(c['docs'] for c in trainer['clusters']):,} documents, "
               f"{sum(c['tokens'] for c in trainer['clusters']):,} tokens in {len(trainer['clusters'])} cluster files; "
               f"validation {valid.get('docs', 0):,} held-out documents")
    held = manifest["held_out"]
    _print(f"   shares within {manifest['max_share_deviation']:.2%} of the weights ({manifest['token_count']}); "
           f"left out {held['docs']:,} held-out documents and {held['duplicates']:,} copies of them")
    extra = ", ".join(f for names in manifest["formats"].values() for f in names)
    _print(f"   weights.json, manifest.json{', ' + extra if extra else ''} beside them; "
           f"load with {manifest['load_with'].replace('<dir>', str(out))}")
    if "megatron" in manifest["formats"]:
        _print(f"   Megatron-LM: pretrain_gpt.py --data-args-path {out / 'megatron-blend.txt'} (or "
               f"--per-split-data-args-path {out / 'megatron-blend.json'}); see docs/export.md")
    if args.push_to_hub:
        from climb_core.export.formats import push_to_hub

        url = push_to_hub(out, args.push_to_hub, private=args.private)
        _print(f"   pushed the card, shards, weights.json and manifest.json to {url}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from climb_core.pipeline import edits

    ws = _open(args.workspace)
    op = args.op
    if op == "rename":
        edits.rename_cluster(ws, args.cluster, args.label)
        _print(f"cluster {args.cluster} renamed to {args.label!r}")
    elif op == "prune":
        edits.prune_clusters(ws, args.clusters, reason=args.reason)
        _print(f"pruned {args.clusters}")
    elif op == "restore":
        edits.restore_clusters(ws, args.clusters)
        _print(f"restored {args.clusters}")
    elif op == "merge":
        new_id = edits.merge_clusters(ws, args.clusters, label=args.label)
        _print(f"merged {args.clusters} into cluster {new_id}")
    elif op == "split":
        new_ids = edits.split_cluster(ws, args.cluster, args.k, seed=args.seed)
        _print(f"split cluster {args.cluster} into {new_ids}")
    elif op == "undo":
        undone = edits.undo(ws)
        _print("nothing to undo" if undone is None else f"undid edit {undone.get('edit_id')}: {undone.get('op')}")
    elif op == "log":
        _print(edits.list_edits(ws).to_string(index=False))
    return 0


def cmd_decontam(args: argparse.Namespace) -> int:
    from climb_core.export.decontam import decontaminate, format_report

    if not args.target:
        raise UsageError("give at least one eval set with --target (e.g. --target arc_easy)")
    rep = decontaminate(_open(args.workspace), [parse_target(t) for t in args.target], n=args.n, drop=args.drop,
                        progress=not args.quiet)
    if _json_mode(args):
        _emit_json(rep.to_dict())
    else:
        _print(format_report(rep))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import signal
    import time
    import urllib.request
    import webbrowser

    from dashboard.netguard import PASSWORD_ENV, is_loopback

    ws = _open(args.workspace)
    if not is_loopback(args.host) and not os.environ.get(PASSWORD_ENV):
        # Checked here, before anything binds: a server without the password would serve its pages
        # (read server files, start jobs) to whoever reaches the port.
        print(f"error: not serving on {args.host or 'every network interface'} without a password: other "
              f"machines could read files and start jobs through the dashboard. Set {PASSWORD_ENV} (e.g. "
              f"`{PASSWORD_ENV}='a long passphrase' climb dashboard {args.workspace} --host {args.host}`) or "
              "serve on 127.0.0.1.", file=sys.stderr)
        return 1
    # Always headless: a non-headless first run asks for an e-mail on stdin and hangs without a terminal.
    # The options of .streamlit/config.toml are repeated as flags: streamlit reads that file from the
    # current directory, which is rarely the checkout.
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "dashboard" / "serve.py"),
           "--server.address", args.host, "--server.port", str(args.port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
           "--", "--workspace", str(ws.root)]
    url = f"http://{'127.0.0.1' if args.host in {'0.0.0.0', '::'} else args.host}:{args.port}"
    _print(f"CLIMB Studio on {url}  (workspace {ws.root}; Ctrl-C to stop)")
    if not is_loopback(args.host):
        log.warning("listening on %s: other machines can reach this dashboard (password from %s)", args.host, PASSWORD_ENV)

    class Stop(Exception):
        def __init__(self, signum: int):
            self.signum = signum

    def on_signal(signum, _frame):
        raise Stop(signum)

    def stop_group(proc: subprocess.Popen) -> None:
        """SIGTERM to the server's process group, SIGKILL if it is still there after 10 s."""
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue

    # The server runs in its own process group, which the launcher stops on Ctrl-C, SIGTERM and SIGHUP:
    # a `kill` of the launcher (or docker stop, or a closed terminal) must not leave the port served.
    stops = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in stops}
    proc = None
    try:
        proc = subprocess.Popen(cmd, env={**os.environ, "CLIMB_WORKSPACE": str(ws.root)}, start_new_session=True)
        if not args.no_browser:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                    webbrowser.open(url)
                    break
                except OSError:
                    time.sleep(0.5)
        return proc.wait()
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Stop as stop:
        return 128 + stop.signum
    finally:
        for sig in stops:  # a second signal while the server stops must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None and proc.poll() is None:
            stop_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_config(args: argparse.Namespace) -> int:
    if args.reference:
        _print(reference_markdown())
    else:
        _print(dump_toml(ClimbConfig(), with_docs=True))
    return 0


# ----------------------------------------------------------------------------------------- parser
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("climb-studio")
    except PackageNotFoundError:  # run from a checkout that was never installed
        from climb_core import __version__

        return __version__


def _verbosity_flags(p: argparse.ArgumentParser) -> None:
    """-v/-q, accepted before the command and after it. SUPPRESS keeps a subcommand's unset flag from
    overwriting one given before the command; main() fills in the defaults."""
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="more messages on stderr: -v what each step does, -vv debugging detail")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="errors only on stderr, no progress bars")


def _json_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object on stdout (docs/cli-json.md)")


def _search_flag(p: argparse.ArgumentParser, help_text: str, *, old: str | None = None) -> None:
    """--search SEARCH_ID, the one name of the search selector; `old` is an earlier spelling kept working."""
    p.add_argument("--search", metavar="SEARCH_ID", default=None, help=help_text)
    if old:
        p.add_argument(old, dest="search", metavar="SEARCH_ID", action=DeprecatedAlias, new="--search")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="climb", description="CLIMB Studio: cluster a corpus and search its data mixture.",
                                     epilog="Exit status: 0 success, 1 error, 2 usage error, 130 Ctrl-C, 143 SIGTERM. "
                                            "Results go to stdout, messages and progress bars to stderr.")
    parser.add_argument("--version", action="version", version=f"climb {_version()}")
    _verbosity_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a workspace folder")
    p.add_argument("workspace")
    p.add_argument("--input", nargs="+", help="input files or folders")
    _add_config_flags(p, list(STAGE_FLAGS))
    p.set_defaults(fn=cmd_init)

    for stage in STAGES:
        p = sub.add_parser(stage.name, help=stage.help)
        p.add_argument("workspace")
        if stage.name == "ingest":
            p.add_argument("--input", nargs="+", help="input files or folders (replaces ingest.paths)")
        p.add_argument("--force", action="store_true", help="run even if up to date")
        _add_config_flags(p, [stage.name])
        p.set_defaults(fn=cmd_stage)

    p = sub.add_parser("run-all", help=f"run {', '.join(PIPELINE)} in order")
    p.add_argument("workspace")
    p.add_argument("--input", nargs="+", help="input files or folders")
    p.add_argument("--force", action="store_true", help="run every stage even if up to date")
    _add_config_flags(p, PIPELINE)
    p.set_defaults(fn=cmd_run_all)

    p = sub.add_parser("status", help="stages, counts and clusters of a workspace")
    p.add_argument("workspace")
    _json_flag(p, "the workspace's status")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("export-assignments", help="one row per document: id, final cluster and label, map coordinates")
    p.add_argument("workspace")
    p.add_argument("--out", required=True, help="a .parquet file")
    p.set_defaults(fn=cmd_export_assignments)

    p = sub.add_parser("search", help="search the mixture (stop any time; continue with --resume)")
    p.add_argument("workspace")
    p.add_argument("--target", action="append", help="target: arc_easy, piqa, hellaswag, winogrande, mc:PATH, "
                   "text:PATH, text:cluster:ID or lm-eval:TASK; options ,metric=M,weight=W,max_items=N (repeatable)")
    p.add_argument("--metric", help="metric for every multiple-choice target: acc, acc_norm or loglik")
    p.add_argument("--name", help="a name for the search")
    p.add_argument("--resume", metavar="SEARCH_ID", help="continue a stopped or killed search")
    p.add_argument("--search-id", help="id for the new search (default: time and a random suffix)")
    p.add_argument("--warm-start", action="append", metavar="SEARCH_ID",
                   help="learn from this search's runs (imported or earlier) from round 1; only new runs count in "
                        "the budget; runs on clusters edited since are carried over (repeatable)")
    p.add_argument("--warm-start-any", action="store_true",
                   help="take warm runs scored on other targets or proxy settings too (each such source gets a score offset)")
    _json_flag(p, "the search's report")
    _add_config_flags(p, ["search", "tokens"])
    p.set_defaults(fn=cmd_search)

    p = sub.add_parser("study", help="compare every strategy on one target; re-train each final as a larger model")
    p.add_argument("workspace")
    p.add_argument("--target", action="append", help="target, as for `climb search` (repeatable)")
    p.add_argument("--metric", help="metric for every multiple-choice target: acc, acc_norm or loglik")
    p.add_argument("--name", help="a name for the study")
    p.add_argument("--resume", metavar="STUDY_ID", help="continue a stopped study")
    p.add_argument("--study-id", help="id for the new study")
    _json_flag(p, "the study's report")
    _add_config_flags(p, ["search", "tokens", "study"])
    p.set_defaults(fn=cmd_study)

    p = sub.add_parser("runs", help="list searches and their proxy runs; `runs import WS FILE` imports runs trained elsewhere")
    p.add_argument("workspace", help="the workspace, or `import` followed by WORKSPACE FILE")
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    _search_flag(p, "only this search")
    _json_flag(p, "every search with every proxy run of every round")
    p.add_argument("--csv", nargs="?", const="-", metavar="FILE",
                   help="with --search: its finished runs as CSV (one weight column per cluster id, score, metrics) "
                        "to FILE or stdout; `climb runs import` reads it back")
    p.add_argument("--name", help="import: a name for the imported search")
    p.add_argument("--map", metavar="FILE", help="import: a JSON or CSV mapping your domain names to cluster ids or labels")
    p.add_argument("--target", action="append", help="import: the target the runs were scored on (default: the workspace's)")
    p.add_argument("--metric", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_runs)

    p = sub.add_parser("cancel", help="stop a running search after its current proxy run")
    p.add_argument("workspace")
    _search_flag(p, "the search to stop")
    p.add_argument("old_search_id", nargs="?", metavar="SEARCH_ID", action=DeprecatedAlias, new="--search SEARCH_ID",
                   into="search")
    p.set_defaults(fn=cmd_cancel)

    p = sub.add_parser("export", help="write a search's mixture and a dataset sampled by it")
    p.add_argument("workspace")
    _search_flag(p, "the search whose final mixture to export (required)", old="--run")
    p.add_argument("--dataset-tokens", type=int, default=None, metavar="N",
                   help="tokens in the sampled dataset (default export.tokens)")
    p.add_argument("--tokens", dest="dataset_tokens", type=int, default=None, action=DeprecatedAlias,
                   new="--dataset-tokens")
    p.add_argument("--out", required=True, help="output folder (an earlier export there is replaced)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder that is not an earlier export")
    p.add_argument("--formats", default="hf,megatron,nemo", metavar="LIST",
                   help="trainer files beside the shards: hf (dataset card), megatron, nemo (tokenised .bin/.idx per "
                        "cluster, blends, per-cluster JSONL), comma-separated, or none (default: all)")
    p.add_argument("--tokenizer", default=None, metavar="TOKENIZER",
                   help="tokenizer of the Megatron-LM/NeMo files: a Hugging Face tokenizer folder, a tokenizer.json, or a "
                        "name in the local Hugging Face cache (nothing is downloaded); default export.tokenizer, else "
                        "the workspace's own")
    p.add_argument("--sample", action="store_true",
                   help="Megatron-LM/NeMo files hold the Parquet shards' token-budget sample (repeats included) instead "
                        "of every training document of each cluster once with the weights in the blend")
    p.add_argument("--push-to-hub", default=None, metavar="REPO",
                   help="upload the card, shards, weights.json and manifest.json to this Hugging Face dataset repo "
                        "(needs network and a token: huggingface-cli login or HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    _json_flag(p, "the export's manifest")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("edit", help="rename, prune, restore, merge, split clusters; undo; log")
    p.add_argument("workspace")
    esub = p.add_subparsers(dest="op", required=True)
    e = esub.add_parser("rename"); e.add_argument("cluster", type=int); e.add_argument("label")
    e = esub.add_parser("prune"); e.add_argument("clusters", type=int, nargs="+"); e.add_argument("--reason", default="pruned by user")
    e = esub.add_parser("restore"); e.add_argument("clusters", type=int, nargs="+")
    e = esub.add_parser("merge"); e.add_argument("clusters", type=int, nargs="+"); e.add_argument("--label")
    e = esub.add_parser("split"); e.add_argument("cluster", type=int); e.add_argument("k", type=int); e.add_argument("--seed", type=int, default=0)
    esub.add_parser("undo")
    esub.add_parser("log")
    p.set_defaults(fn=cmd_edit)

    p = sub.add_parser("decontam", help="n-gram overlap of the corpus with MC eval sets, per cluster")
    p.add_argument("workspace")
    p.add_argument("--target", action="append", default=[], help="eval set: arc_easy, piqa, mc:PATH (repeatable)")
    p.add_argument("--n", type=int, default=13, help="n-gram length in words (default 13)")
    p.add_argument("--drop", action="store_true", help="record flagged documents in table decontam_flags")
    _json_flag(p, "the overlap report")
    p.set_defaults(fn=cmd_decontam)

    p = sub.add_parser("dashboard", help="open the Streamlit dashboard on this workspace")
    p.add_argument("workspace")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.set_defaults(fn=cmd_dashboard)

    p = sub.add_parser("config", help="print the default config with every key documented")
    p.add_argument("--reference", action="store_true", help="as a Markdown table")
    p.set_defaults(fn=cmd_config)

    for p in sub.choices.values():  # every command takes -v/-q after its name too
        _verbosity_flags(p)
    return parser


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (a test's capture, a redirected stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname.lower()}: {text}"


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """The `climb_core` loggers to stderr: WARNING by default, INFO with -v, DEBUG with -vv, ERROR with -q."""
    level = logging.ERROR if quiet else max(logging.DEBUG, logging.WARNING - 10 * verbose)
    logger = logging.getLogger("climb_core")
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter("%(message)s" if verbose < 2 else "%(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # a library's basicConfig on the root logger must not print each line twice


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) and usage errors (2), already printed
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    args.verbose = int(getattr(args, "verbose", 0) or 0)
    args.quiet = bool(getattr(args, "quiet", False))
    setup_logging(args.verbose, args.quiet)
    for note in getattr(args, "deprecated_notes", []):
        log.warning(note)
    try:
        with sigterm_raises():
            return args.fn(args)
    except UsageError as err:
        print(f"climb {args.command}: usage error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: finished steps are saved; run the same command again to continue", file=sys.stderr)
        return 130
    except Interrupted:
        print("terminated (SIGTERM): finished steps are saved; run the same command again to continue", file=sys.stderr)
        return 143
    except (ConfigError, StageError, WorkspaceError, CliError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        # A file or folder the user named that cannot be read or written (missing, read-only, a folder).
        where = f" {err.filename}" if err.filename else ""
        print(f"error:{where}: {err.strerror or err}" if where else f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - engine errors with a user-facing message
        if type(err).__name__.endswith("Error") and type(err).__module__.startswith("climb_core"):
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
