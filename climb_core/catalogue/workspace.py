"""The workspace: a folder holding a DuckDB catalogue plus large arrays as files beside it.

Layout:
    WS/climb.toml           the workspace's config (every stage reads it)
    WS/climb.duckdb         the catalogue: documents, stats, clusters, edits, searches, runs
    WS/embeddings/          float16/float32 .npy shards, rows in doc_idx order
    WS/tokens/              tokenizer.json and per-cluster uint16/uint32 token files
    WS/exports/             exported mixtures and datasets
    WS/logs/                logs of background jobs

Connections are short-lived: open, do one unit of work, close. DuckDB lets one process write a file
at a time, so a dashboard reading while a search worker writes would otherwise see lock errors;
`connect` retries while another process holds the file, and no process holds it for long.

Connections come from one in-memory DuckDB instance per process with the file ATTACHed while in use
(`climb_core/catalogue/connections.py`): about 1.5 ms to attach and detach, where starting an instance on the
file costs 12-15 ms. A burst of catalogue work that no other process needs to see in between (a
search choosing its next round) runs inside `Workspace.held()`, which keeps the file attached for
the burst and releases it when it ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from climb_core.catalogue import connections
from climb_core.config import ClimbConfig, load_config, save_config

SCHEMA_VERSION = 6
DB_NAME = "climb.duckdb"
CONFIG_NAME = "climb.toml"

# Version 1 of the catalogue. Each later version appends a list of statements to MIGRATIONS.
SCHEMA_V1 = [
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    # One row per stage: what ran, with which config and inputs, and how it ended.
    """CREATE TABLE IF NOT EXISTS stages (
        stage VARCHAR PRIMARY KEY, status VARCHAR, config_json VARCHAR, fingerprint VARCHAR,
        started_at TIMESTAMP, finished_at TIMESTAMP, rows_in BIGINT, rows_out BIGINT, message VARCHAR)""",
    # Finished shards of a stage still running; a killed stage resumes after the last one.
    """CREATE TABLE IF NOT EXISTS stage_shards (
        stage VARCHAR, shard VARCHAR, rows BIGINT, info VARCHAR, finished_at TIMESTAMP)""",
    # doc_idx is dense (0..N-1) and is the row of the document in the embedding shards.
    """CREATE TABLE IF NOT EXISTS documents (
        doc_idx BIGINT, doc_id VARCHAR, text VARCHAR, source_file VARCHAR, source_line BIGINT,
        text_hash UBIGINT, preset_cluster VARCHAR, meta_json VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS doc_stats (
        doc_idx BIGINT, n_chars INTEGER, n_words INTEGER, mean_word_len REAL, n_lines INTEGER,
        symbol_ratio REAL, digit_ratio REAL, upper_ratio REAL, non_alpha_word_frac REAL,
        stopword_count INTEGER, bullet_line_frac REAL, ellipsis_line_frac REAL,
        repeated_line_frac REAL, dup_ngram_frac REAL, n_tokens_est INTEGER,
        quality_heuristic REAL, quality_user REAL, quality REAL)""",
    # Records that never became documents (or were dropped as duplicates), with where and why.
    """CREATE TABLE IF NOT EXISTS rejected (
        source_file VARCHAR, source_line BIGINT, doc_id VARCHAR, reason VARCHAR, detail VARCHAR, stage VARCHAR)""",
    # k-means output, never edited: the original cluster of each document.
    "CREATE TABLE IF NOT EXISTS assignments (doc_idx BIGINT, base_cluster INTEGER, distance REAL)",
    "CREATE TABLE IF NOT EXISTS base_clusters (base_cluster INTEGER, size BIGINT, centroid FLOAT[])",
    # Every cluster that ever existed in the refined state; state in active|pruned|merged|split.
    """CREATE TABLE IF NOT EXISTS clusters (
        cluster_id INTEGER, label VARCHAR, auto_label VARCHAR, label_source VARCHAR, state VARCHAR,
        reason VARCHAR, parent_ids INTEGER[], merged_into INTEGER, created_edit BIGINT,
        size_docs BIGINT, size_tokens BIGINT, mean_quality REAL, keywords VARCHAR[], centroid FLOAT[])""",
    # The current cluster of each document (pruned clusters keep their documents).
    "CREATE TABLE IF NOT EXISTS doc_clusters (doc_idx BIGINT, cluster_id INTEGER)",
    # Parent -> child edges of merges and splits, so any cluster can be traced to its origins.
    "CREATE TABLE IF NOT EXISTS cluster_edges (parent_id INTEGER, child_id INTEGER, op VARCHAR, edit_id BIGINT)",
    # Append-only edit log; undo marks an edit undone and restores what it recorded.
    """CREATE TABLE IF NOT EXISTS edits (
        edit_id BIGINT, ts TIMESTAMP, op VARCHAR, args_json VARCHAR, source VARCHAR,
        undone BOOLEAN DEFAULT FALSE, undone_at TIMESTAMP, summary VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS edit_cluster_before (edit_id BIGINT, cluster_id INTEGER, existed BOOLEAN, row_json VARCHAR)",
    "CREATE TABLE IF NOT EXISTS edit_doc_moves (edit_id BIGINT, doc_idx BIGINT, from_cluster INTEGER, to_cluster INTEGER)",
    "CREATE TABLE IF NOT EXISTS representatives (cluster_id INTEGER, rank INTEGER, doc_idx BIGINT, distance REAL)",
    "CREATE TABLE IF NOT EXISTS map_coords (doc_idx BIGINT, x REAL, y REAL)",
    # Mixture search.
    """CREATE TABLE IF NOT EXISTS token_shards (
        cluster_id INTEGER, split VARCHAR, path VARCHAR, n_tokens BIGINT, n_docs BIGINT, tokenizer_hash VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS searches (
        search_id VARCHAR, name VARCHAR, strategy VARCHAR, status VARCHAR, config_json VARCHAR,
        target_json VARCHAR, cluster_ids INTEGER[], cluster_labels VARCHAR[], prior DOUBLE[],
        created_at TIMESTAMP, updated_at TIMESTAMP, pid INTEGER, message VARCHAR,
        final_weights DOUBLE[], final_predicted DOUBLE, best_run_id VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS proxy_runs (
        search_id VARCHAR, run_id VARCHAR, round INTEGER, idx INTEGER, weights DOUBLE[], seed BIGINT,
        tokens BIGINT, predicted DOUBLE, status VARCHAR, score DOUBLE, scores_json VARCHAR,
        loss_curve DOUBLE[], epochs_json VARCHAR, wall_s DOUBLE, host VARCHAR,
        proposed_at TIMESTAMP, finished_at TIMESTAMP, error VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS predictor_reports (
        search_id VARCHAR, round INTEGER, n_train INTEGER, spearman DOUBLE, r2 DOUBLE, method VARCHAR,
        importance DOUBLE[], created_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS exports (
        export_id VARCHAR, search_id VARCHAR, path VARCHAR, n_tokens BIGINT, n_docs BIGINT,
        manifest_json VARCHAR, created_at TIMESTAMP)""",
    # Background jobs started from the dashboard (stages, searches).
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id VARCHAR, kind VARCHAR, args_json VARCHAR, status VARCHAR, pid INTEGER,
        started_at TIMESTAMP, finished_at TIMESTAMP, log_path VARCHAR, message VARCHAR)""",
]

# MIGRATIONS[v] upgrades a catalogue from version v to v + 1.
MIGRATIONS: dict[int, list[str]] = {
    # v2: verified finals, predictor choice per round, studies.
    1: [
        "ALTER TABLE searches ADD COLUMN IF NOT EXISTS cluster_tokens BIGINT[]",
        "ALTER TABLE searches ADD COLUMN IF NOT EXISTS final_json VARCHAR",
        "ALTER TABLE proxy_runs ADD COLUMN IF NOT EXISTS purpose VARCHAR",
        "ALTER TABLE proxy_runs ADD COLUMN IF NOT EXISTS predicted_sd DOUBLE",
        "ALTER TABLE predictor_reports ADD COLUMN IF NOT EXISTS predictor VARCHAR",
        "ALTER TABLE predictor_reports ADD COLUMN IF NOT EXISTS flat BOOLEAN",
        "ALTER TABLE predictor_reports ADD COLUMN IF NOT EXISTS reason VARCHAR",
        "ALTER TABLE predictor_reports ADD COLUMN IF NOT EXISTS candidates_json VARCHAR",
        """CREATE TABLE IF NOT EXISTS studies (
            study_id VARCHAR, name VARCHAR, status VARCHAR, config_json VARCHAR, target_json VARCHAR,
            created_at TIMESTAMP, updated_at TIMESTAMP, message VARCHAR, report_dir VARCHAR)""",
        """CREATE TABLE IF NOT EXISTS study_finals (
            study_id VARCHAR, search_id VARCHAR, label VARCHAR, strategy VARCHAR, seed INTEGER,
            final_seed INTEGER, status VARCHAR, score DOUBLE, scores_json VARCHAR, tokens BIGINT,
            wall_s DOUBLE, error VARCHAR, finished_at TIMESTAMP)""",
    ],
    # v3: the worker's start time beside its pid, so a reused pid is not mistaken for it.
    2: [
        "ALTER TABLE searches ADD COLUMN IF NOT EXISTS pid_started DOUBLE",
        "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS pid_started DOUBLE",
    ],
    # v4: stages claim their process too: a killed stage reads `interrupted`, and one stage runs once at a time.
    3: [
        "ALTER TABLE stages ADD COLUMN IF NOT EXISTS pid INTEGER",
        "ALTER TABLE stages ADD COLUMN IF NOT EXISTS pid_started DOUBLE",
    ],
    # v5: each stage records the fingerprints of the stages it read, so a later re-run of one of them
    # (new input files for ingest, say) shows it and everything after it as stale; studies claim
    # their process like searches, so a killed study reads `interrupted`.
    4: [
        "ALTER TABLE stages ADD COLUMN IF NOT EXISTS upstream_json VARCHAR",
        "ALTER TABLE studies ADD COLUMN IF NOT EXISTS pid INTEGER",
        "ALTER TABLE studies ADD COLUMN IF NOT EXISTS pid_started DOUBLE",
    ],
    # v6: warm starts. A warm run is a row of the new search (round 0, purpose 'warm', never trained)
    # naming the run it came from and how its weights were carried to the current clusters;
    # a search records the edit that created each of its clusters, so a reused cluster id is told apart.
    5: [
        "ALTER TABLE proxy_runs ADD COLUMN IF NOT EXISTS source_search VARCHAR",
        "ALTER TABLE proxy_runs ADD COLUMN IF NOT EXISTS source_run VARCHAR",
        "ALTER TABLE proxy_runs ADD COLUMN IF NOT EXISTS mapping VARCHAR",
        "ALTER TABLE searches ADD COLUMN IF NOT EXISTS cluster_created BIGINT[]",
        "ALTER TABLE searches ADD COLUMN IF NOT EXISTS warm_json VARCHAR",
    ],
}


class WorkspaceError(RuntimeError):
    """The workspace is missing, not initialised, or of a newer schema than this code."""


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction on `con`: committed when the block ends, rolled back when it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@dataclass
class Workspace:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def tokens_dir(self) -> Path:
        return self.root / "tokens"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @classmethod
    def init(cls, root: str | Path, config: ClimbConfig | None = None, exist_ok: bool = True) -> "Workspace":
        """Create (or re-open) a workspace folder with its catalogue and config file."""
        root = Path(root).resolve()
        if (root / DB_NAME).exists() and not exist_ok:
            raise WorkspaceError(f"{root} is already a workspace")
        root.mkdir(parents=True, exist_ok=True)
        ws = cls(root)
        for d in (ws.embeddings_dir, ws.tokens_dir, ws.exports_dir, ws.logs_dir):
            d.mkdir(exist_ok=True)
        if config is not None or not ws.config_path.exists():
            save_config(config or ClimbConfig(), ws.config_path)
        ws.migrate()
        return ws

    @classmethod
    def open(cls, root: str | Path) -> "Workspace":
        root = Path(root).resolve()
        if not (root / DB_NAME).exists():
            raise WorkspaceError(f"{root} is not a CLIMB workspace (no {DB_NAME}); create one with `climb init {root}`")
        ws = cls(root)
        ws.migrate()
        return ws

    def load_config(self) -> ClimbConfig:
        if not self.config_path.exists():
            return ClimbConfig()
        return load_config(self.config_path)

    def save_config(self, config: ClimbConfig) -> None:
        save_config(config, self.config_path)

    @contextlib.contextmanager
    def connect(self, read_only: bool = False, timeout_s: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits while another process holds the file.

        `read_only`: a connection that cannot write (for SQL a user wrote), on an instance of its
        own; refused while this thread holds the catalogue (`held` or an open connection)."""
        try:
            if read_only:
                with connections.read_only_connection(str(self.db_path), timeout_s) as con:
                    yield con
            else:
                with connections.connection(str(self.db_path), timeout_s) as con:
                    yield con
        except connections.CatalogueBusy as err:
            raise WorkspaceError(str(err)) from err

    @contextlib.contextmanager
    def held(self) -> Iterator["Workspace"]:
        """Keep the catalogue open for a burst of short connections (see the module's docstring).
        Other processes wait (`connect` retries) until the block ends: keep it short, and never
        hold it across work that takes seconds, such as training proxies. Blocks nest."""
        with connections.hold(str(self.db_path)):
            yield self

    def schema_version(self) -> int:
        with self.connect() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> None:
        with self.connect() as con:
            con.execute(SCHEMA_V1[0])
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version == SCHEMA_VERSION:
                return  # current: nothing to write (every open of a workspace passes here)
            if version > SCHEMA_VERSION:
                raise WorkspaceError(
                    f"{self.root} has catalogue schema v{version}, newer than this CLIMB Studio (v{SCHEMA_VERSION}); upgrade the tool")
            if version == 0:
                for stmt in SCHEMA_V1:
                    con.execute(stmt)
                version = 1
            while version < SCHEMA_VERSION:
                for stmt in MIGRATIONS[version]:
                    con.execute(stmt)
                version += 1
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version)])

    def query_df(self, sql: str, params: list | None = None):
        """Run a read query and return a pandas DataFrame (a short-lived connection)."""
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def scalar(self, sql: str, params: list | None = None):
        with self.connect() as con:
            row = con.execute(sql, params or []).fetchone()
        return None if row is None else row[0]

    def table_count(self, table: str) -> int:
        return int(self.scalar(f"SELECT count(*) FROM {table}"))
