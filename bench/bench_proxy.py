"""Proxy cost: our train_proxy (GPT) against a bare nanoGPT-style loop of the same model, same run;
and the n-gram proxy's train + score time. Data: the bundled demo corpus, one token file per domain.

    python bench/bench_proxy.py [--tokens 60000] [--threads 2] [--device cpu] [--n-layer 2 --n-embd 128]
    python bench/bench_proxy.py --only batched --group 4,8 --batch-tokens 30000 --repeats 3
    python bench/bench_proxy.py --only ngram-round --round 8 --repeats 3

`--only batched`: a group of GPT proxies (one mixture and seed each) trained as one stacked model
(climb_core.proxy.batched) against the same proxies trained one after another, plus the
torch.func route (vmap over functional_call) timed per step on the same shapes.
`--only ngram-round`: a round of n-gram proxies (train + score each) on 1 process, on a thread
pool of 2 and on a process pool of 2 (started before the clock; its start is reported apart).
Each is repeated; medians and the min-max spread are printed, since the machine is shared.

The bare loop draws random windows from one memmap with a fixed learning rate: no mixture, no
schedule, no loss curve. The ratio is what the mixture machinery costs on top of the model itself.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from climb_core.config import ProxyConfig, TargetSpec  # noqa: E402
from perf import emit  # noqa: E402
from climb_core.pipeline.tokens import eot_id, train_tokenizer  # noqa: E402
from climb_core.proxy.targets import evaluate_targets, load_targets  # noqa: E402
from climb_core.proxy.train import MixtureData, train_proxy  # noqa: E402


def domain_token_files(tmp: Path, vocab: int):
    """Tokenise the demo corpus into one train file per true domain (what the tokens stage writes)."""
    with gzip.open(REPO / "data" / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh]
    tok = train_tokenizer([d["text"] for d in docs], vocab, tmp / "tokenizer.json")
    eot = eot_id(tok)
    paths, domains = [], sorted({d["domain"] for d in docs})
    for dom in domains:
        enc = tok.encode_batch([d["text"] for d in docs if d["domain"] == dom], add_special_tokens=False)
        arr = np.concatenate([np.array([*e.ids, eot], dtype=np.uint16) for e in enc])
        path = tmp / f"{dom}.bin"
        arr.tofile(path)
        paths.append(path)
    return tok, domains, paths


def bare_loop(cfg: ProxyConfig, vocab: int, path: Path, steps: int) -> float:
    """nanoGPT's train.py reduced to its core; returns seconds."""
    import torch

    from climb_core.proxy.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64 * -(-vocab // 64), block_size=cfg.block_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd)).to(cfg.device)
    opt = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate)
    data = np.memmap(path, dtype=np.uint16, mode="r")
    t0 = time.perf_counter()
    for _ in range(steps):
        ix = torch.randint(len(data) - cfg.block_size - 1, (cfg.batch_size,))
        xy = torch.stack([torch.from_numpy(data[i:i + cfg.block_size + 1].astype(np.int64)) for i in ix]).to(cfg.device)
        _, loss = model(xy[:, :-1], xy[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
    return time.perf_counter() - t0


def _median_spread(xs: list[float]) -> str:
    return f"median {float(np.median(xs)):.2f} (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


def bench_batched(args, paths, vocab) -> None:
    """Stacked GPT proxies against the same proxies one after another, alternated per repeat."""
    import torch

    from climb_core.proxy.batched import train_gpt_batched
    from climb_core.proxy.train import train_gpt

    over = {k: v for k, v in {"n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_head}.items() if v}
    cfg = ProxyConfig(kind="gpt", tokens=args.batch_tokens, device=args.device, threads=args.threads, **over)
    rng = np.random.default_rng(0)

    def datas(n):
        return [MixtureData(range(len(paths)), paths, w, "uint16", vocab) for w in rng.dirichlet(np.ones(len(paths)), n)]

    steps = max(1, cfg.tokens // (cfg.batch_size * cfg.block_size))
    tokens = steps * cfg.batch_size * cfg.block_size
    print(f"batched GPT {cfg.n_layer}x{cfg.n_embd} (heads {cfg.n_head}), block {cfg.block_size}, batch {cfg.batch_size}, "
          f"vocab {vocab}: {tokens:,} tokens ({steps} steps) per proxy, {args.threads} threads, {args.device}")
    import dataclasses

    # Warm-up: first-call allocations and thread pools, outside the clock.
    train_gpt_batched(dataclasses.replace(cfg, tokens=2 * cfg.batch_size * cfg.block_size), datas(2), [0, 1])
    for group in [int(g) for g in args.group.split(",")]:
        ratios, cpu_ratios, seq_tps, bat_tps = [], [], [], []
        for rep in range(args.repeats):
            ds, seeds = datas(group), list(range(rep * 100, rep * 100 + group))
            # CPU seconds beside wall seconds: on a shared machine a process descheduled for a while
            # loses wall time it did not spend working; with one thread CPU time is the work done.
            t0, c0 = time.perf_counter(), time.process_time()
            for d, s in zip(ds, seeds):
                train_gpt(cfg, d, s)
            seq_s, seq_c = time.perf_counter() - t0, time.process_time() - c0
            ds = [MixtureData(range(len(paths)), paths, d.weights, "uint16", vocab) for d in ds]
            t0, c0 = time.perf_counter(), time.process_time()
            train_gpt_batched(cfg, ds, seeds)
            bat_s, bat_c = time.perf_counter() - t0, time.process_time() - c0
            seq_tps.append(group * tokens / seq_s)
            bat_tps.append(group * tokens / bat_s)
            ratios.append(seq_s / bat_s)
            cpu_ratios.append(seq_c / bat_c)
            print(f"    group {group} repeat {rep + 1}: one after another {seq_s:.1f} s ({seq_c:.1f} s CPU), "
                  f"stacked {bat_s:.1f} s ({bat_c:.1f} s CPU)", flush=True)
        print(f"  group of {group}: stacked {np.median(bat_tps):,.0f} tokens/s ({np.median(bat_tps) / tokens:.3f} proxies/s)"
              f"   one after another {np.median(seq_tps):,.0f} tokens/s")
        print(f"    ratio stacked/sequential, wall: {_median_spread(ratios)}; CPU time: {_median_spread(cpu_ratios)}")
        emit("bench_proxy.py", f"batched GPT proxies, group of {group} (stacked)",
             f"{tokens:,} tokens per proxy, {cfg.n_layer}x{cfg.n_embd} GPT", f"{np.median(bat_tps):,.0f} tokens/s",
             f"one after another {np.median(seq_tps):,.0f} tokens/s",
             f"{_median_spread(ratios)} wall, {_median_spread(cpu_ratios)} CPU")
    if args.skip_vmap:
        return
    # torch.func: the GPT module itself, vmapped over stacked parameters; one training step timed.
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    from climb_core.proxy.model import GPT, GPTConfig

    group = int(args.group.split(",")[0])
    gcfg = GPTConfig(vocab_size=64 * -(-vocab // 64), block_size=cfg.block_size, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd)
    models = []
    for s in range(group):
        torch.manual_seed(s)
        models.append(GPT(gcfg))
    opts = [m.configure_optimizer(cfg.weight_decay, cfg.learning_rate) for m in models]
    params, _ = stack_module_state(models)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    vopt = torch.optim.AdamW(list(params.values()), lr=cfg.learning_rate, betas=(0.9, 0.95))
    base = copy.deepcopy(models[0])
    x = torch.randint(0, vocab, (group, cfg.batch_size, cfg.block_size + 1))

    def seq_step():
        for m, o, xi in zip(models, opts, x):
            _, loss = m(xi[:, :-1], xi[:, 1:])
            o.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            o.step()
            loss.item()

    def vmap_step():
        loss = vmap(lambda p, a, b: functional_call(base, (p,), (a, b))[1])(params, x[:, :, :-1], x[:, :, 1:])
        vopt.zero_grad(set_to_none=True)
        loss.sum().backward()
        vopt.step()
        loss.tolist()

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vmap's "no batching rule for SDPA" fallback warning
        ratios = []
        for fn in (seq_step, vmap_step):
            fn()
        for _ in range(args.repeats):
            n = 5
            t0 = time.perf_counter()
            for _ in range(n):
                seq_step()
            seq_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(n):
                vmap_step()
            ratios.append(seq_s / (time.perf_counter() - t0))
    print(f"  torch.func vmap, group of {group}, per training step (no clipping): ratio vmap/sequential "
          f"{_median_spread(ratios)}")


_NG: dict = {}


def _ngram_init(tok_path: str, paths: list[str], mc_items: int) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tok_path)
    specs = [TargetSpec(kind="mc", path=f"data/eval/{n}.jsonl", metric="loglik", max_items=mc_items)
             for n in ("arc_easy", "piqa", "hellaswag")]
    _NG.update(paths=paths, vocab=tok.get_vocab_size(), specs=specs, targets=load_targets(None, specs, tok))


def _ngram_run(task: tuple[list[float], int, int]) -> float:
    """One n-gram proxy as the engine runs it: draw the mixture, count, score the targets."""
    weights, seed, tokens = task
    data = MixtureData(range(len(_NG["paths"])), _NG["paths"], weights, "uint16", _NG["vocab"])
    proxy = train_proxy(ProxyConfig(kind="ngram", tokens=tokens), data, seed)
    return evaluate_targets(proxy, _NG["targets"], _NG["specs"])[0]


def bench_ngram_round(args, tmp: Path, paths) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    init = (str(tmp / "tokenizer.json"), [str(p) for p in paths], args.mc_items)
    _ngram_init(*init)
    rng = np.random.default_rng(0)
    tasks = [(list(w), i, args.ngram_tokens) for i, w in enumerate(rng.dirichlet(np.ones(len(paths)), args.round))]
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(1, init))
    list(pool.map(_noop, range(2)))
    start_s = time.perf_counter() - t0
    threads = ThreadPoolExecutor(2)
    print(f"n-gram round: {args.round} proxies, order 3, {args.ngram_tokens:,} training tokens each, scored on "
          f"{sum(t.n_items for t in _NG['targets'])} MC items; process pool of 2 started in {start_s:.1f} s")
    one, thr, proc = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ref = [_ngram_run(t) for t in tasks]
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert list(threads.map(_ngram_run, tasks)) == ref
        thr.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert list(pool.map(_ngram_run, tasks)) == ref
        proc.append(time.perf_counter() - t0)
    pool.shutdown()
    threads.shutdown()
    n = args.round
    print(f"  1 process: {n / np.median(one):.2f} proxies/s ({np.median(one):.1f} s a round)")
    print(f"  2 threads: {n / np.median(thr):.2f} proxies/s   ratio threads/1 {_median_spread([a / b for a, b in zip(one, thr)])}")
    print(f"  2 processes: {n / np.median(proc):.2f} proxies/s   ratio processes/1 "
          f"{_median_spread([a / b for a, b in zip(one, proc)])}")
    print(f"  2 processes, pool start counted once in a round: ratio {np.median(one) / (np.median(proc) + start_s):.2f}")
    emit("bench_proxy.py", f"n-gram round of {n} proxies on 2 worker processes",
         f"{args.ngram_tokens:,} training tokens each, order 3", f"{n / np.median(proc):.2f} proxies/s",
         f"1 process {n / np.median(one):.2f} proxies/s", f"{_median_spread([a / b for a, b in zip(one, proc)])}")


def _worker_init(threads: int, init: tuple) -> None:
    from climb_core.proxy.executors import share_cores

    share_cores(threads)
    _ngram_init(*init)


def _noop(x):
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=60_000, help="GPT training tokens per run")
    ap.add_argument("--ngram-tokens", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--n-layer", type=int, default=None)
    ap.add_argument("--n-embd", type=int, default=None)
    ap.add_argument("--n-head", type=int, default=None)
    ap.add_argument("--mc-items", type=int, default=300, help="items per MC target (ARC-Easy, PIQA, HellaSwag)")
    ap.add_argument("--skip-gpt-scoring", action="store_true")
    ap.add_argument("--only", choices=["all", "single", "batched", "ngram-round"], default="all")
    ap.add_argument("--group", default="4,8", help="batched: group sizes, comma-separated")
    ap.add_argument("--batch-tokens", type=int, default=30_000, help="batched: training tokens per proxy")
    ap.add_argument("--round", type=int, default=8, help="ngram-round: proxies in the round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-vmap", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    over = {k: v for k, v in {"n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_head}.items() if v}
    gpt = ProxyConfig(kind="gpt", tokens=args.tokens, device=args.device, threads=args.threads, **over)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tok, domains, paths = domain_token_files(Path(tmp), args.vocab)
        sizes = [len(np.memmap(p, dtype=np.uint16, mode="r")) for p in paths]
        print(f"data: {len(domains)} domains, {sum(sizes):,} tokens, vocab {tok.get_vocab_size()} "
              f"(tokenised in {time.perf_counter() - t0:.1f} s)")
        weights = np.full(len(paths), 1.0 / len(paths))
        vocab = tok.get_vocab_size()
        specs = [TargetSpec(kind="mc", path=f"data/eval/{n}.jsonl", metric="loglik", max_items=args.mc_items)
                 for n in ("arc_easy", "piqa", "hellaswag")]
        targets = load_targets(None, specs, tok)
        n_items = sum(t.n_items for t in targets)
        n_score_tokens = sum(len(s) for t in targets for s in t.sequences)
        if args.only in ("all", "batched"):
            bench_batched(args, paths, vocab)
        if args.only in ("all", "ngram-round"):
            bench_ngram_round(args, Path(tmp), paths)
        if args.only not in ("all", "single"):
            return 0

        # --- GPT
        steps = gpt.tokens // (gpt.batch_size * gpt.block_size)
        bare_loop(gpt, vocab, paths[0], 3)  # warm-up: first-call allocations, thread pools
        proxy = train_proxy(gpt, MixtureData(range(len(paths)), paths, weights, "uint16", vocab), seed=0)
        ours_s = proxy.train_s
        bare_s = bare_loop(gpt, vocab, paths[0], steps)
        ours, bare = proxy.tokens_seen / ours_s, steps * gpt.batch_size * gpt.block_size / bare_s
        print(f"GPT {gpt.n_layer}x{gpt.n_embd} (heads {gpt.n_head}), block {gpt.block_size}, batch {gpt.batch_size}: "
              f"{proxy.n_params:,} params (incl. tied embeddings), {proxy.tokens_seen:,} tokens, {steps} steps, "
              f"{args.threads} threads, {args.device}")
        print(f"  train_proxy: {ours:,.0f} tokens/s ({ours_s:.1f} s)   bare loop: {bare:,.0f} tokens/s ({bare_s:.1f} s)"
              f"   ratio ours/bare: {ours / bare:.2f}")
        print(f"  loss {proxy.loss_curve[0]:.2f} -> {proxy.loss_curve[-1]:.2f}")
        emit("bench_proxy.py", f"GPT proxy training, {proxy.n_params:,} parameters, {args.threads} threads",
             f"{proxy.tokens_seen:,} tokens", f"{ours:,.0f} tokens/s", f"bare nanoGPT-style loop {bare:,.0f} tokens/s",
             f"{ours / bare:.2f}x")
        gpt_total = float("nan")
        if not args.skip_gpt_scoring:
            t0 = time.perf_counter()
            score, _ = evaluate_targets(proxy, targets, specs)
            dt = time.perf_counter() - t0
            gpt_total = ours_s + dt
            print(f"  scoring {n_items} MC items ({n_score_tokens:,} tokens): {dt:.1f} s "
                  f"({n_score_tokens / dt:,.0f} tokens/s), score {score:.3f}")

        # --- n-gram
        ng = ProxyConfig(kind="ngram", tokens=args.ngram_tokens)
        t0 = time.perf_counter()
        proxy = train_proxy(ng, MixtureData(range(len(paths)), paths, weights, "uint16", vocab), seed=0)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        score, _ = evaluate_targets(proxy, targets, specs)
        score_s = time.perf_counter() - t0
        print(f"n-gram order {ng.ngram_order}: train on {proxy.tokens_seen:,} tokens {train_s:.2f} s, "
              f"score {n_items} MC items ({n_score_tokens:,} tokens) {score_s:.2f} s, total {train_s + score_s:.2f} s, "
              f"score {score:.3f}")
        emit("bench_proxy.py", f"n-gram proxy, order {ng.ngram_order}, train + score {n_items} MC items",
             f"{proxy.tokens_seen:,} tokens", f"{train_s:.2f} s + {score_s:.2f} s",
             f"the GPT above, trained and scored: {gpt_total:.1f} s",
             f"{gpt_total / (train_s + score_s):.0f}x faster per proxy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
