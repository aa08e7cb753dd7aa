"""What each round proposes, written before any of it trains, and the answer a search concludes with."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from climb_core.catalogue.workspace import Workspace
from climb_core.config import config_from_dict
from climb_core.search.constraints import constraints_for
from climb_core.search.final_scale import final_tokens_for
from climb_core.search.records import done_runs, insert_report, timestamp, ws_tx
from climb_core.search.strategies import Final, Plan, Strategy, plan


class SearchContext:
    """What the rounds need: the config, the snapshot's clusters and prior, the strategy and its plan."""

    def __init__(self, ws: Workspace, row: dict[str, Any]):
        self.ws = ws
        self.search_id = row["search_id"]
        self.config = config_from_dict(json.loads(row["config_json"]))
        self.cluster_ids = [int(i) for i in row["cluster_ids"]]
        self.prior = np.asarray(row["prior"], dtype=np.float64)
        tokens = row.get("cluster_tokens")
        tokens = None if tokens is None or isinstance(tokens, float) else [int(t) for t in tokens]
        self.cons = constraints_for(self.config.mixture, self.prior, self.cluster_ids, tokens,
                                    export_tokens=self.config.export.tokens)
        # The final model's training tokens, by the rule the repetition cap uses.
        self.final_tokens = final_tokens_for(self.config.mixture, self.config.export.tokens, tokens, self.cons.upper > 0)
        self.strategy = Strategy(row["strategy"], self.config, self.prior, self.cons)
        self.plan: Plan = plan(row["strategy"], self.config)
        self.sizes = self.plan.explore
        self.seed = self.config.search.seed
        from climb_core.search.warm import warm_info

        self.warm = warm_info(row)  # the warm-start report (sources, counts, which get an offset), or None


def _run_seed(seed: int, rnd: int, idx: int) -> int:
    return int(np.random.SeedSequence([int(seed), rnd, idx, 7]).generate_state(1, dtype=np.uint32)[0])


def write_proposals(ctx: SearchContext, rnd: int, weights: np.ndarray, predicted, predicted_sd, report: dict | None,
                     purpose: str = "explore", final: Final | None = None, tokens: int | None = None) -> None:
    """Write a round's proposed runs (and its predictor report) in one transaction; a round that an
    earlier attempt already wrote is left as it was."""
    now = timestamp()
    n = len(weights)

    def col(values):
        return [None] * n if values is None else [None if v is None else float(v) for v in values]

    df = pd.DataFrame({
        "search_id": ctx.search_id,
        "run_id": [f"{ctx.search_id}-r{rnd}-{i:03d}" for i in range(n)],
        "round": rnd, "idx": np.arange(n, dtype=np.int32),
        "weights": [list(map(float, w)) for w in weights],
        "seed": [_run_seed(ctx.seed, rnd, i) for i in range(n)],
        "tokens": int(tokens or ctx.config.proxy.tokens),
        "predicted": col(predicted), "predicted_sd": col(predicted_sd),
        "status": "proposed", "purpose": purpose, "proposed_at": now,
    })
    with ws_tx(ctx.ws) as con:
        # Re-checked inside the transaction: a proposal written by an earlier attempt wins.
        if con.execute("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND round = ?", [ctx.search_id, rnd]).fetchall()[0][0]:
            return
        con.register("props", df)
        con.execute("""INSERT INTO proxy_runs (search_id, run_id, round, idx, weights, seed, tokens, predicted, predicted_sd,
                           status, purpose, proposed_at)
                       SELECT search_id, run_id, round, idx, weights, seed, tokens, predicted, predicted_sd, status,
                           purpose, proposed_at FROM props""")
        if report is not None:
            insert_report(con, ctx.search_id, rnd, report)
        if final is not None:
            con.execute("UPDATE searches SET final_json = ? WHERE search_id = ?",
                        [json.dumps(final_record(final, stage="verifying")), ctx.search_id])


def final_record(final: Final, **more) -> dict[str, Any]:
    return {"weights": [float(x) for x in final.weights], "predicted": final.predicted,
            "predicted_sd": final.predicted_sd, "how": final.how, **final.extra, **more}


def round_proposal(ctx: SearchContext, rnd: int, n: int, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """What `write_proposals` writes for exploration round `rnd`, from the finished runs (X, y)."""
    r = ctx.strategy.propose(rnd, n, X.reshape(len(y), -1) if len(y) else X, y)
    return {"weights": r.weights, "predicted": r.predicted, "predicted_sd": r.predicted_sd, "report": r.report}


def verification_proposal(ctx: SearchContext, X: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    """The final mixture's verification runs, for `write_proposals`; None: nothing to choose from.
    In scaling mode the final comes from the predictor over weights and scale, verified at the larger scale."""
    if len(y) == 0:
        return None
    tokens = None
    if ctx.plan.scale:
        from climb_core.search.scaling import scale_final, scale_tokens, scaled_runs

        Xs, log_s, ys = scaled_runs(ctx.ws, ctx.search_id, int(ctx.config.proxy.tokens))
        final = scale_final(ctx.strategy, Xs, log_s, ys, ctx.plan.verify_round, ctx.final_tokens)
        tokens = scale_tokens(ctx.config)
    else:
        final = ctx.strategy.final(X, y, ctx.plan.verify_round)
    n = ctx.plan.verify
    return {"weights": np.repeat(final.weights[None, :], n, axis=0), "predicted": [final.predicted] * n,
            "predicted_sd": [final.predicted_sd] * n, "report": final.report, "purpose": "verify", "final": final,
            "tokens": tokens}


def scale_proposal(ctx: SearchContext, n: int) -> dict[str, Any] | None:
    """The scaling round: the n best distinct explored mixtures, retrained at the larger scale."""
    from climb_core.search.scaling import scale_round_weights, scale_tokens

    X, y, _ = done_runs(ctx.ws, ctx.search_id)
    if len(y) == 0:
        return None
    return {"weights": scale_round_weights(X, y, n), "predicted": None, "predicted_sd": None, "report": None,
            "purpose": "scale", "tokens": scale_tokens(ctx.config)}


def conclude(ctx: SearchContext) -> dict[str, Any] | None:
    """The search's answer, from its trained runs: the verified final, or the best exploration run
    when verification scored below it (or there was none)."""
    # Scores at two scales are not comparable: in scaling mode the answer is judged among the larger scale's runs.
    X, y, run_ids = done_runs(ctx.ws, ctx.search_id, purposes=("scale",)) if ctx.plan.scale else (None, [], [])
    if len(y) == 0:
        X, y, run_ids = done_runs(ctx.ws, ctx.search_id)
    if len(y) == 0:
        return None
    best = int(np.argmax(y))
    best_run = {"run_id": run_ids[best], "score": float(y[best]), "weights": [float(v) for v in X[best]]}
    if ctx.plan.verify == 0:
        return {"weights": best_run["weights"], "predicted": None, "predicted_sd": None, "how": "best trained run",
                "chosen": "best_run", "best_run": best_run, "verified_scores": [], "verified": best_run["score"],
                "note": "", "stage": "done"}
    raw = ctx.ws.scalar("SELECT final_json FROM searches WHERE search_id = ?", [ctx.search_id])
    final = json.loads(raw) if isinstance(raw, str) else {}
    vr = ctx.ws.query_df("SELECT score FROM proxy_runs WHERE search_id = ? AND purpose = 'verify' AND status = 'done' "
                         "ORDER BY idx", [ctx.search_id])
    scores = [float(v) for v in vr["score"]]
    verified = float(np.mean(scores)) if scores else None
    final.update(best_run=best_run, verified_scores=scores, verified=verified, stage="done")
    if not final.get("weights") or verified is None:
        final.update(weights=best_run["weights"], chosen="best_run",
                     note="the final mixture could not be trained; answering with the best trained run")
    elif verified < best_run["score"]:
        final.update(proposed_weights=final["weights"], weights=best_run["weights"], chosen="best_run",
                     note=(f"the proposed final verified at {verified:.4f}, below the best trained run "
                           f"{best_run['run_id']} ({best_run['score']:.4f}); answering with that run"))
    else:
        final.update(chosen="optimum", note=f"verified at {verified:.4f} over {len(scores)} run(s); "
                                             f"best exploration run {best_run['score']:.4f}")
    return final
