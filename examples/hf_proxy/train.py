"""Reference command proxy: train a small `transformers` decoder on a CLIMB job's mixture and score
it with lm-evaluation-harness, writing {job}/result.json.

    climb search WS --proxy command --proxy-command 'python examples/hf_proxy/train.py {job} --layers 2 --d-model 64' \
        --target lm-eval:climb_arc_easy,metric=acc_norm --budget 28

Tiny on CPU (the tests run it with --layers 1 --d-model 32); the same script with --layers 24
--d-model 1024 --block 2048 on a GPU is a proxy of the paper's size (use --executor slurm to run
one per GPU). Every run of a search must see the same tokenizer: the default is a byte-level BPE
trained once on an equal share of every cluster's documents and cached beside the data files;
--tokenizer NAME_OR_PATH uses a Hugging Face one (e.g. gpt2) instead.

The score is the weighted mean of the job's targets: lm-eval targets as given; a bundled mc target
(data/eval/arc_easy.jsonl, ...) is scored by the matching climb_* lm-eval task; its `loglik`
metric, which lm-eval has no name for, is read as acc_norm.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", help="the job folder CLIMB made ({job})")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--block", type=int, default=128, help="context length in tokens")
    ap.add_argument("--batch", type=int, default=8, help="sequences per optimiser step")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--vocab", type=int, default=2048, help="size of the BPE trained when --tokenizer is not given")
    ap.add_argument("--tokenizer", default="", help="a Hugging Face tokenizer name or folder (default: train one)")
    ap.add_argument("--tokens", type=int, default=0, help="training tokens (default: the job's)")
    ap.add_argument("--eval-limit", type=int, default=0, help="items per lm-eval task (default: the job's max_items)")
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return ap.parse_args(argv)


def read_docs(path: str, limit_bytes: int | None = None):
    n = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line)["text"]
            yield text
            n += len(text)
            if limit_bytes is not None and n >= limit_bytes:
                return


def load_tokenizer(job: dict, args):
    """The same tokenizer for every run of the search (see the module docstring)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if args.tokenizer:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        if tok.eos_token is None:
            raise SystemExit(f"tokenizer {args.tokenizer} has no end-of-text token")
        return tok
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    cache = Path(job["data"]["dir"]) / f"hf_proxy_bpe_{args.vocab}.json"
    if not cache.exists():
        per_cluster = 400_000
        texts = [t for c in sorted(job["clusters"], key=lambda c: c["id"]) for t in read_docs(c["train_path"], per_cluster)]
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        bpe.train_from_iterator(texts, trainer)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        bpe.save(str(tmp))
        os.replace(tmp, cache)  # runs that start together each train the same file; one rename wins
    return PreTrainedTokenizerFast(tokenizer_file=str(cache), eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def mixture_stream(job: dict, tok, n_tokens: int, seed: int):
    """Token ids drawn by the job's mixture: each cluster gives weight x n_tokens tokens of its
    documents (shuffled, repeated when it has fewer), each document followed by end-of-text."""
    rng = random.Random(seed)
    eos = tok.eos_token_id
    parts = []
    for c in job["clusters"]:
        want = int(round(c["weight"] * n_tokens))
        if want <= 0:
            continue
        docs = list(read_docs(c["train_path"]))
        rng.shuffle(docs)
        ids: list[int] = []
        i = 0
        while len(ids) < want and docs:
            ids += tok(docs[i % len(docs)], add_special_tokens=False)["input_ids"] + [eos]
            i += 1
        parts.append(ids[:want])
    return parts


def batches(parts, block: int, batch: int, seed: int):
    """Windows of `block` tokens from the clusters' parts, in a shuffled order (the model shifts
    the labels itself)."""
    import torch

    windows = [p[i:i + block] for p in parts for i in range(0, len(p) - block + 1, block)]
    random.Random(seed + 1).shuffle(windows)
    for lo in range(0, len(windows) - batch + 1, batch):
        yield torch.tensor(windows[lo:lo + batch])


def targets_to_tasks(job: dict) -> list[tuple[str, str, float]]:
    """(lm-eval task, metric, weight) per target of the job."""
    out = []
    for t in job["targets"]:
        if t["kind"] == "lm-eval":
            out.append((t["path"], t["metric"] if t["metric"] != "loglik" else "acc", float(t["weight"])))
        elif t["kind"] == "mc" and Path(t["path"]).stem in ("arc_easy", "piqa", "hellaswag", "winogrande"):
            metric = "acc_norm" if t["metric"] == "loglik" else t["metric"]
            out.append((f"climb_{Path(t['path']).stem}", metric, float(t["weight"])))
        else:
            raise SystemExit(f"hf_proxy cannot score a {t['kind']} target ({t['path']}); use lm-eval targets")
    if not out:
        raise SystemExit("the job has no targets")
    return out


def small_lm(model, tok, block: int, batch: int, device: str):
    """An lm-eval LM over the model for loglikelihood tasks, encoding requests as lm-eval's HFLM
    does: trailing whitespace of the context moves to the continuation, the continuation is what
    context + continuation adds to the context's tokens, and end-of-text precedes every sequence."""
    import torch
    from lm_eval.api.model import LM

    eos = tok.eos_token_id

    def encode(context: str, continuation: str):
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        ctx = tok(context, add_special_tokens=False)["input_ids"] if context else []
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        seq = ([eos] + whole)[-(block + 1):]  # the newest block + 1 tokens, as HFLM truncates
        return seq, len(whole) - len(ctx)

    @torch.no_grad()
    def score(reqs):
        out = []
        for lo in range(0, len(reqs), batch):
            part = [encode(*r) for r in reqs[lo:lo + batch]]
            width = max(len(s) for s, _ in part) - 1
            x = torch.full((len(part), width), eos, dtype=torch.long)
            for i, (s, _) in enumerate(part):
                x[i, :len(s) - 1] = torch.tensor(s[:-1])
            logp = torch.log_softmax(model(input_ids=x.to(device), use_cache=False).logits.float(), -1).cpu()
            for i, (s, n_cont) in enumerate(part):
                tgt = torch.tensor(s[1:])
                rows = logp[i, :len(s) - 1]
                cont = slice(len(s) - 1 - n_cont, len(s) - 1)
                ll = rows[cont].gather(1, tgt[cont, None]).sum()
                out.append((float(ll), bool((rows[cont].argmax(-1) == tgt[cont]).all())))
        return out

    class SmallLM(LM):
        def loglikelihood(self, requests, disable_tqdm=True):
            return score([r.args for r in requests])

        def loglikelihood_rolling(self, requests, disable_tqdm=True):
            return [ll for ll, _ in score([("", r.args[0]) for r in requests])]

        def generate_until(self, requests, disable_tqdm=True):
            raise NotImplementedError("install accelerate to use lm-eval's HFLM for generation tasks")

    return SmallLM()


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    job_dir = Path(args.job)
    job = json.loads((job_dir / "job.json").read_text())
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    seed = int(job["seed"]) % (2 ** 31)
    torch.manual_seed(seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tok = load_tokenizer(job, args)
    n_tokens = args.tokens or int(job["tokens"])
    parts = mixture_stream(job, tok, n_tokens, seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.d_model, intermediate_size=4 * args.d_model,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                      max_position_embeddings=args.block, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).to(device)
    steps = max(1, n_tokens // (args.block * args.batch))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    curve, step = [], 0
    model.train()
    while step < steps:
        seen = False
        for xb in batches(parts, args.block, args.batch, seed + step):
            seen = True
            xb = xb.to(device)
            with amp:
                loss = model(input_ids=xb, labels=xb, use_cache=False).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            curve.append(float(loss.detach()))
            step += 1
            if step >= steps:
                break
        if not seen:
            raise SystemExit(f"the mixture gave fewer than {args.block * args.batch} tokens; lower --block or --batch")
    model.eval()

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = targets_to_tasks(job)
    limit = args.eval_limit or job["lm_eval"].get("limit") or max((t["max_items"] for t in job["targets"]), default=0)
    try:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.eval_batch, max_length=args.block, device=device)
    except ImportError:  # HFLM needs accelerate; the small wrapper below scores loglikelihood tasks the same way
        lm = small_lm(model, tok, args.block, args.eval_batch, device)
    res = simple_evaluate(model=lm, tasks=list(dict.fromkeys(t for t, _, _ in tasks)),
                          task_manager=TaskManager(include_path=job["lm_eval"]["include"]), limit=limit or None,
                          bootstrap_iters=0, log_samples=False, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    metrics = {}
    for task, table in res["results"].items():
        for key, value in table.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in key \
                    and not key.startswith("sample_len"):
                metrics[f"{task}/{key.split(',')[0]}"] = float(value)
    score = sum(w * metrics[f"{t}/{m}"] for t, m, w in tasks) / sum(w for _, _, w in tasks)
    result = {"score": score, "metrics": metrics, "loss_curve": curve[:: max(1, len(curve) // 200)],
              "tokens": steps * args.batch * args.block, "wall_s": time.time() - t0,
              "params": sum(p.numel() for p in model.parameters())}
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, job_dir / "result.json")  # CLIMB never reads a half-written result
    print(f"score {score:.4f} after {steps} steps ({result['tokens']} tokens) in {result['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
