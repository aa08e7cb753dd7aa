"""Proxy cost: our train_proxy (GPT) against a bare nanoGPT-style loop of the same model, same run;
and the n-gram proxy's train + score time. Data: the bundled demo corpus, one token file per domain.

    python bench/bench_proxy.py [--tokens 60000] [--threads 2] [--device cpu] [--n-layer 2 --n-embd 128]

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
from climb_core.proxy.train import MixtureData, train_proxy  # noqa: E402
from climb_core.targets import evaluate_targets, load_targets  # noqa: E402
from climb_core.tokens import eot_id, train_tokenizer  # noqa: E402


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
        if not args.skip_gpt_scoring:
            t0 = time.perf_counter()
            score, _ = evaluate_targets(proxy, targets, specs)
            dt = time.perf_counter() - t0
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
