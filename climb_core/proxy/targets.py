"""Targets: what a proxy is scored on. Multiple-choice benchmarks and held-out text.

Multiple choice follows lm-evaluation-harness: an item's request for choice j is (context, " " +
choice_j); the choice's log-likelihood is the sum of log p(continuation tokens | context tokens),
where the context is tokenised alone and the continuation is what the whole string adds after it.
Metrics per component:
    acc       argmax_j loglik_j == label
    acc_norm  argmax_j loglik_j / len(choice_j) == label   (lm-eval's: characters of the choice,
              without the delimiter; checked against lm-eval in tests/test_lm_eval_targets.py)
    loglik    mean over items of the correct choice's log-likelihood per token: a continuous
              signal, because tiny proxies score near chance on acc.
Every sequence starts with the end-of-text token, as every training document does; when the
context is empty (Winogrande-style items whose choices are whole sentences), that token is the
whole context and the continuation is the choice without a leading space.

Text targets report neg_bpb = -(total nats / ln 2) / total UTF-8 bytes of the held-out text, from a
.txt file (one document per blank-line-separated paragraph), a JSONL with "text", 'cluster:ID' (that cluster's validation tokens, never trained on),
or 'query:<SQL predicate over documents>'. A query's documents are also in the training data of
their clusters: the score then rewards memorising them. Exclude them from the search (prune or
split them into a cluster given no weight) when that matters.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from climb_core.catalogue.workspace import Workspace
from climb_core.config import ConfigError, TargetSpec

# The bundled evaluation sets, named by file stem on the command line (arc_easy, piqa, ...).
BUNDLED_EVAL = Path(__file__).resolve().parents[2] / "data" / "eval"

REPO_ROOT = Path(__file__).resolve().parents[2]
MC_METRICS = ("acc", "acc_norm", "loglik")
TEXT_METRICS = ("neg_bpb",)


class TargetError(ValueError):
    """A target file or spec cannot be used: missing, malformed (file and line named) or empty."""


@dataclass
class Target:
    spec: TargetSpec
    name: str
    kind: str                           # mc | text
    sequences: list[np.ndarray]         # token ids, each starting with EOT
    # mc: one sequence per (item, choice)
    item_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cont_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # first continuation token
    choice_len: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # characters, acc_norm's divisor
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))      # per item
    # text
    n_bytes: int = 0
    # lm-eval: scored by lm-evaluation-harness through climb_core.proxy.lm_eval_adapter
    tokenizer: Any = None
    eot: int = 0
    include: tuple = ()

    @property
    def n_items(self) -> int:
        return len(self.labels) if self.kind == "mc" else len(self.sequences)


def resolve_path(path: str) -> Path:
    """A relative path is looked up in the current folder, then in the repository (bundled data/eval)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        if not p.exists():
            raise TargetError(f"target file {p} does not exist")
        return p
    for base in (Path.cwd(), REPO_ROOT):
        if (base / p).exists():
            return base / p
    if not p.suffix and len(p.parts) == 1:
        # A bare name is meant as a bundled set (arc_easy, piqa, ...): say which ones exist.
        raise TargetError(f"target {path!r}: no bundled eval set of that name; known: {', '.join(bundled_names())} "
                          f"(or give a file: mc:PATH, text:PATH)")
    raise TargetError(f"target file {path!r} not found in {Path.cwd()} or {REPO_ROOT}")


def bundled_names() -> list[str]:
    """Names of the bundled evaluation sets (data/eval/*.jsonl), as `--target` accepts them."""
    return sorted(p.stem for p in BUNDLED_EVAL.glob("*.jsonl"))


def target_name(spec: TargetSpec) -> str:
    if spec.name:
        return spec.name
    if spec.path.startswith("cluster:"):
        return "cluster-" + spec.path.split(":", 1)[1].strip()
    if spec.path.startswith("query:"):
        return "query"
    return Path(spec.path).name.split(".")[0]


def _sample(n: int, max_items: int, seed: int = 0) -> np.ndarray:
    """A fixed-seed subset (in original order) so every proxy of a search is scored on the same items."""
    if max_items <= 0 or n <= max_items:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_items, replace=False))


def read_mc_items(path: Path) -> list[dict]:
    items = []
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TargetError(f"{path}: cannot read the target file ({err.strerror or err})") from err
    for line_no, data in enumerate(raw.split(b"\n"), 1):
        if not data.strip():
            continue
        try:
            line = data.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise TargetError(f"{path}:{line_no}: not UTF-8 (byte 0x{data[err.start]:02x} at column "
                              f"{err.start + 1})") from err
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise TargetError(f"{path}:{line_no}: not valid JSON ({err})") from err
        if not isinstance(rec, dict):
            raise TargetError(f"{path}:{line_no}: expected a JSON object {{context, choices, label}}, "
                              f"got a {type(rec).__name__}")
        choices, label = rec.get("choices"), rec.get("label")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise TargetError(f"{path}:{line_no}: 'choices' must be a list of at least two strings")
        # bool is a subclass of int: `"label": true` would silently mean choice 1.
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
            raise TargetError(f"{path}:{line_no}: 'label' must be an integer index into 'choices' "
                              f"(0 to {len(choices) - 1}), got {label!r}")
        items.append({"context": str(rec.get("context") or ""), "choices": choices, "label": label})
    return items


def _mc_target(spec: TargetSpec, tokenizer, eot: int) -> Target:
    path = resolve_path(spec.path)
    items = read_mc_items(path)
    if not items:
        raise TargetError(f"{path}: no items")
    items = [items[i] for i in _sample(len(items), spec.max_items)]
    contexts, wholes, item_of, labels, lengths = [], [], [], [], []
    for i, it in enumerate(items):
        ctx = it["context"]
        # lm-eval moves the context's trailing spaces onto the continuation.
        stripped = ctx.rstrip(" ")
        pad = ctx[len(stripped):]
        for choice in it["choices"]:
            cont = (pad or " ") + choice if stripped else choice
            contexts.append(stripped)
            wholes.append(stripped + cont)
            lengths.append(len(choice))
            item_of.append(i)
        labels.append(it["label"])
    ctx_enc = tokenizer.encode_batch(contexts, add_special_tokens=False)
    whole_enc = tokenizer.encode_batch(wholes, add_special_tokens=False)
    sequences, starts = [], []
    for c, w in zip(ctx_enc, whole_enc):
        n_ctx = len(c.ids)
        sequences.append(np.array([eot, *w.ids], dtype=np.int64))
        starts.append(1 + n_ctx)
        if len(w.ids) <= n_ctx:
            raise TargetError(f"{path}: a choice tokenised to nothing; check the file")
    return Target(spec, target_name(spec), "mc", sequences, np.array(item_of), np.array(starts),
                  np.array(lengths), np.array(labels))


def _text_docs(ws: Workspace | None, spec: TargetSpec, tokenizer, eot: int) -> tuple[list[np.ndarray], int]:
    """Token sequences (each [EOT, doc...]) and their total UTF-8 bytes."""
    src = spec.path
    if src.startswith("cluster:"):
        from climb_core.pipeline.tokens import cluster_token_files

        if ws is None:
            raise TargetError("a 'cluster:' target needs a workspace")
        cid = int(src.split(":", 1)[1])
        files = {f.cluster_id: f for f in cluster_token_files(ws)}
        if cid not in files:
            raise TargetError(f"target {src!r}: cluster {cid} is not an active cluster with token files")
        val = np.fromfile(files[cid].val_path, dtype=files[cid].dtype).astype(np.int64)
        cuts = np.flatnonzero(val == eot)
        docs = [d for d in np.split(val, cuts + 1) if len(d)]
        # The trailing separator has no bytes; it becomes the (unscored) first token instead.
        docs = [d[:-1] if d[-1] == eot else d for d in docs]
        docs = [d for d in docs if len(d)]
        docs = [docs[i] for i in _sample(len(docs), spec.max_items)]
        texts = tokenizer.decode_batch([d.tolist() for d in docs], skip_special_tokens=False)
        return [np.concatenate([[eot], d]) for d in docs], sum(len(t.encode("utf-8")) for t in texts)
    if src.startswith("query:"):
        if ws is None:
            raise TargetError("a 'query:' target needs a workspace")
        predicate = src.split(":", 1)[1]
        texts = _query_texts(ws, predicate)
    else:
        path = resolve_path(src)
        if path.suffix == ".jsonl":
            texts = []
            with path.open(encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            texts.append(str(json.loads(line)["text"]))
                        except (json.JSONDecodeError, KeyError) as err:
                            raise TargetError(f"{path}:{line_no}: expected a JSON object with 'text' ({err})") from err
        else:
            texts = [t for t in path.read_text(encoding="utf-8").split("\n\n") if t.strip()]
    texts = [texts[i] for i in _sample(len(texts), spec.max_items)]
    enc = tokenizer.encode_batch(texts, add_special_tokens=False)
    return [np.array([eot, *e.ids], dtype=np.int64) for e in enc], sum(len(t.encode("utf-8")) for t in texts)


def _predicate_rows(ws: Workspace, predicate: str, select: str, order: str = "") -> list[tuple]:
    """Rows of `SELECT {select} FROM documents WHERE (predicate)`, run on a read-only connection
    without file or network access, as exactly one SELECT: a user's predicate cannot write, drop,
    attach or COPY anything out. Any failure is reported as the user's predicate's."""
    import duckdb

    sql = f"SELECT {select} FROM documents WHERE ({predicate}){order}"
    try:
        with ws.connect(read_only=True) as con:
            con.execute("SET enable_external_access = false")
            statements = con.extract_statements(sql)
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise TargetError(f"target query {predicate!r}: a query target is one SQL predicate over "
                                  "documents (e.g. text ILIKE '%court%'), not further statements")
            return con.execute(sql).fetchall()
    except TargetError:
        raise
    except Exception as err:  # a user's SQL: report it as theirs
        raise TargetError(f"target query {predicate!r} is not a valid predicate over documents: "
                          f"{str(err).splitlines()[0]}") from err


def _query_texts(ws, predicate: str) -> list[str]:
    """Documents matching a query target's predicate, in document order."""
    return [r[0] for r in _predicate_rows(ws, predicate, "text", " ORDER BY doc_idx")]


def load_targets(ws: Workspace | None, specs: list[TargetSpec], tokenizer, lm_eval_include=()) -> list[Target]:
    """Tokenise every target component once (a search scores many proxies on the same tokens).
    lm-eval components are only checked here; lm-eval builds their requests when it scores."""
    from climb_core.pipeline.tokens import eot_id

    eot = eot_id(tokenizer)
    out = []
    for spec in specs:
        if spec.kind == "mc":
            if spec.metric not in MC_METRICS:
                raise TargetError(f"target {target_name(spec)}: metric {spec.metric!r} is not one of {MC_METRICS}")
            out.append(_mc_target(spec, tokenizer, eot))
        elif spec.kind == "text":
            if spec.metric not in TEXT_METRICS:
                raise TargetError(f"target {target_name(spec)}: metric {spec.metric!r} is not one of {TEXT_METRICS}")
            seqs, n_bytes = _text_docs(ws, spec, tokenizer, eot)
            if not seqs or n_bytes == 0:
                raise TargetError(f"target {target_name(spec)} ({spec.path}) has no text")
            out.append(Target(spec, target_name(spec), "text", seqs, n_bytes=n_bytes))
        elif spec.kind == "lm-eval":
            from climb_core.proxy.lm_eval_adapter import include_paths, require_lm_eval

            try:
                require_lm_eval()
                include = tuple(include_paths(lm_eval_include))
            except (ImportError, FileNotFoundError) as err:
                raise TargetError(str(err)) from err
            out.append(Target(spec, spec.name or spec.path, "lm-eval", [], tokenizer=tokenizer, eot=eot,
                              include=include[1:]))
        else:
            raise TargetError(f"target kind {spec.kind!r}: expected mc, text or lm-eval")
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise TargetError(f"target names must differ: {names}; give each a 'name'")
    return out


def validate_targets(ws: Workspace | None, specs: list[TargetSpec]) -> None:
    """Check every target component as far as can be done without a tokenizer, so a bad target is
    refused before a search or study records anything, not found inside its first proxy run.

    MC files are read in full (file and line named for any fault); text files are decoded; a
    'cluster:ID' must name an active cluster and a 'query:' predicate must compile and match a
    document on the read-only connection. Raises TargetError (or ConfigError for a bad key)."""
    from climb_core.config import validate_target_specs

    if not specs:
        raise TargetError("no target: pass --target (e.g. arc_easy, mc:PATH, text:PATH or text:cluster:ID)")
    validate_target_specs(specs)
    for spec in specs:
        name = target_name(spec)
        if spec.kind == "mc":
            path = resolve_path(spec.path)
            if not read_mc_items(path):
                raise TargetError(f"target {name}: {path} holds no items")
        elif spec.kind == "lm-eval":
            # The task is resolved by lm-eval where it runs (here for built-in proxies, in the
            # user's trainer for command proxies), so its name cannot be checked against this machine.
            if not spec.path.strip():
                raise TargetError("an lm-eval target needs a task name: lm-eval:TASK")
        elif spec.path.startswith("cluster:"):
            _check_cluster_target(ws, spec.path)
        elif spec.path.startswith("query:"):
            if ws is None:
                raise TargetError("a 'query:' target needs a workspace")
            if _count_query(ws, spec.path.split(":", 1)[1]) == 0:
                raise TargetError(f"target {spec.path!r}: the predicate matches no document")
        else:
            path = resolve_path(spec.path)
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise TargetError(f"{path}: not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start})") from err
            except OSError as err:
                raise TargetError(f"{path}: cannot read the target file ({err.strerror or err})") from err
            if path.suffix == ".jsonl":
                for line_no, line in enumerate(text.splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise TargetError(f"{path}:{line_no}: not valid JSON ({err})") from err
                    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                        raise TargetError(f"{path}:{line_no}: expected a JSON object with a string 'text'")
            if not text.strip():
                raise TargetError(f"target {name}: {path} has no text")
    names = [target_name(s) for s in specs]
    if len(set(names)) != len(names):
        raise TargetError(f"target names must differ: {names}; give each a 'name'")


def _check_cluster_target(ws: Workspace | None, src: str) -> None:
    if ws is None:
        raise TargetError("a 'cluster:' target needs a workspace")
    raw = src.split(":", 1)[1].strip()
    active = [int(r[0]) for r in ws.query_df("SELECT cluster_id FROM clusters WHERE state = 'active' "
                                               "ORDER BY cluster_id").itertuples(index=False)]
    shown = ", ".join(map(str, active[:50])) + (" ..." if len(active) > 50 else "")
    hint = f"active clusters: {shown}" if active else f"no active clusters yet; run `climb refine {ws.root}`"
    try:
        cid = int(raw)
    except ValueError:
        raise TargetError(f"target {src!r}: {raw!r} is not a cluster id; {hint}") from None
    if cid not in active:
        raise TargetError(f"target {src!r}: cluster {cid} is not an active cluster; {hint} "
                          f"(`climb status {ws.root}` lists them)")


def _count_query(ws: Workspace, predicate: str) -> int:
    """How many documents a query target's predicate matches, by the same guarded path as the
    search's own read, so a syntax error surfaces before a search is recorded."""
    return int(_predicate_rows(ws, predicate, "count(*)")[0][0])


def score_target(proxy, target: Target) -> dict[str, float]:
    """Every metric of one component, keyed 'name/metric'."""
    if target.kind == "lm-eval":
        from climb_core.proxy.lm_eval_adapter import score_specs

        task = target.spec.path
        metrics = score_specs(proxy, target.tokenizer, target.eot, [target.spec], target.include)
        return {f"{target.name}/{k.split('/', 1)[1]}": v for k, v in metrics.items() if k.startswith(f"{task}/")}
    logprobs = proxy.sequence_logprobs(target.sequences)
    if target.kind == "text":
        nats = -sum(float(lp.sum()) for lp in logprobs)
        return {f"{target.name}/neg_bpb": -(nats / math.log(2)) / target.n_bytes}
    # logprobs[k][j] scores token j + 1, so the continuation starting at token s is logprobs[k][s-1:].
    ll = np.array([float(lp[s - 1:].sum()) for lp, s in zip(logprobs, target.cont_start)])
    n_tok = np.array([len(seq) - s for seq, s in zip(target.sequences, target.cont_start)])
    n_items = len(target.labels)
    acc = acc_norm = loglik = 0.0
    for i in range(n_items):
        rows = np.flatnonzero(target.item_of == i)
        label_row = rows[target.labels[i]]
        acc += float(np.argmax(ll[rows]) == target.labels[i])
        acc_norm += float(np.argmax(ll[rows] / target.choice_len[rows]) == target.labels[i])
        loglik += ll[label_row] / n_tok[label_row]
    return {f"{target.name}/acc": acc / n_items, f"{target.name}/acc_norm": acc_norm / n_items,
            f"{target.name}/loglik": loglik / n_items}


def evaluate_targets(proxy, targets: list[Target], specs: list[TargetSpec] | None = None) -> tuple[float, dict[str, float]]:
    """(weighted mean of each component's chosen metric, every metric of every component)."""
    specs = specs if specs is not None else [t.spec for t in targets]
    scores: dict[str, float] = {}
    total = weight = 0.0
    for target, spec in zip(targets, specs, strict=True):
        part = score_target(proxy, target)
        scores.update(part)
        total += spec.weight * part[f"{target.name}/{spec.metric}"]
        weight += spec.weight
    if weight <= 0:
        raise TargetError("target weights must sum to more than zero")
    return total / weight, scores


def parse_target(text: str) -> TargetSpec:
    """`arc_easy`, `mc:PATH`, `text:PATH`, `text:cluster:3`, `lm-eval:TASK`, with optional `,metric=M,weight=W,max_items=N`."""
    # Options are the trailing ",key=value" parts with a known key, so a query predicate may hold commas.
    head, *opts = re.split(r",(?=(?:metric|weight|max_items|name)=)", text)
    kind, sep, path = head.partition(":")
    if not sep or kind not in {"mc", "text", "lm-eval"}:
        kind, path = "mc", head
    if kind == "mc" and not Path(path).suffix and (BUNDLED_EVAL / f"{path}.jsonl").exists():
        path = str(BUNDLED_EVAL / f"{path}.jsonl")
    if kind == "lm-eval" and not path.strip():
        raise ConfigError("--target lm-eval:TASK needs a task name, e.g. lm-eval:climb_arc_easy,metric=acc_norm")
    spec = TargetSpec(kind=kind, path=path, metric={"mc": "loglik", "text": "neg_bpb", "lm-eval": "acc"}[kind])
    for opt_text in opts:
        key, _, value = opt_text.partition("=")
        if key not in {"metric", "weight", "max_items", "name"}:
            raise ConfigError(f"--target option {key!r} unknown (metric, weight, max_items, name)")
        typ = type(getattr(spec, key))
        try:
            setattr(spec, key, typ(value))
        except ValueError as err:
            raise ConfigError(f"--target {text!r}: {key}={value!r} is not {'an integer' if typ is int else 'a number'}") from err
    return spec
