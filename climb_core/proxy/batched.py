"""Several GPT proxies of one size trained together: one stacked model, one optimiser step for all.

Each proxy keeps everything that makes it *that* proxy: its parameters are initialised under its own
`torch.manual_seed(seed)` by the same `GPT(...)` constructor as `train.train_gpt`, and its windows
are drawn by its own `np.random.default_rng(seed)` through `MixtureData.sample_windows`, step by
step, exactly as the one-at-a-time loop draws them. Only the arithmetic is shared: the P models'
weights are stacked on a leading axis and every linear layer becomes one `bmm`. The losses are
summed before `backward`, which leaves each proxy's gradient its own (the proxies share no
parameter), gradient clipping is per proxy, and AdamW is elementwise, so stacking does not couple
them. A proxy that diverges turns only its own slice into NaN.

What differs from the sequential path is float rounding (bmm against mm, different summation
orders): scores agree to ~1e-5, not bit for bit (see tests/test_proxy_batched.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from climb_core.config import ProxyConfig
from climb_core.proxy.train import MixtureData, ProxyError, TrainedProxy, gpt_logprobs, gpt_runtime, lr_schedule
from climb_core.proxy.types import ProxyJob, ProxyResult


def _trunk(params: dict, n_layer: int, n_head: int, x):
    """The final normed hidden states (P, B*T, C) of P stacked GPTs, each on its own (B, T) batch of
    x (P, B, T): `model.GPT.forward` up to the head (bias-free linears and norms, no dropout),
    written on stacked weights."""
    import torch
    from torch.nn import functional as F

    P, B, T = x.shape
    wte = params["wte.weight"]                      # (P, V, C), also the output head (tied)
    V, C = wte.shape[1], wte.shape[2]
    # One embedding lookup into the P tables laid end to end: embedding's backward is a dense
    # scatter-add, far faster on CPU than the index_put that advanced indexing would need.
    offsets = (torch.arange(P, device=x.device) * V).view(P, 1, 1)
    h = F.embedding(x + offsets, wte.reshape(P * V, C)) + params["wpe.weight"][:, None, :T]
    h = h.reshape(P, B * T, C)

    def linear(z, w):
        return torch.bmm(z, w.transpose(1, 2))

    def normed_linear(z, gain, w):
        # A norm's gain folded into the next linear (W diag(g)): one small (out, in) product instead
        # of an elementwise pass over the (B*T, C) activations and another in the backward.
        return linear(F.layer_norm(z, (C,)), w * gain[:, None, :])

    d = C // n_head
    for i in range(n_layer):
        pre = f"blocks.{i}."
        q, k, v = normed_linear(h, params[pre + "ln_1.weight"], params[pre + "attn.c_attn.weight"]).split(C, dim=2)
        q, k, v = (t.reshape(P * B, T, n_head, d).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(P, B * T, C)
        h = h + linear(a, params[pre + "attn.c_proj.weight"])
        m = F.gelu(normed_linear(h, params[pre + "ln_2.weight"], params[pre + "mlp.c_fc.weight"]))
        h = h + linear(m, params[pre + "mlp.c_proj.weight"])
    return F.layer_norm(h, (C,)) * params["ln_f.weight"][:, None, :]


def _forward_backward(params: dict, n_layer: int, n_head: int, x, y, autocast):
    """(P,) mean cross-entropies of the stacked GPTs on x -> y, their gradients accumulated in params.

    The head (tied to wte) and the loss go one proxy at a time, each with its own backward, before
    the shared trunk's: one proxy's (B*T, V) logits are alive at a time, as in the sequential path.
    Keeping P of them until one backward cost 2x per element in log-softmax (memory traffic, fresh
    pages) and P full-size zero gradients from slicing the stacked head (measured on CPU)."""
    import torch
    from torch.nn import functional as F

    with autocast:
        h = _trunk(params, n_layer, n_head, x)
    wte = params["wte.weight"]
    targets = y.reshape(y.shape[0], -1)
    losses, h_grads, head_grads = [], [], []
    for p in range(x.shape[0]):
        hp = h[p].detach().requires_grad_()
        wp = wte[p].detach().requires_grad_()
        with autocast:
            loss = F.cross_entropy((hp @ wp.t()).float(), targets[p])
        loss.backward()
        losses.append(loss.detach())
        h_grads.append(hp.grad)
        head_grads.append(wp.grad)
    h.backward(torch.stack(h_grads).to(h.dtype))
    wte.grad.add_(torch.stack(head_grads).to(wte.grad.dtype))
    return torch.stack(losses)


def train_gpt_batched(cfg: ProxyConfig, datas: Sequence[MixtureData], seeds: Sequence[int]) -> list[TrainedProxy]:
    """`train.train_gpt(cfg, data, seed)` for every (data, seed) pair, trained as one stacked model."""
    import torch

    from climb_core.proxy.model import GPT, GPTConfig

    if len(datas) != len(seeds) or not datas:
        raise ProxyError("train_gpt_batched needs one seed per mixture and at least one mixture")
    t0 = time.perf_counter()
    device, autocast = gpt_runtime(cfg)
    P = len(datas)
    vocabs = {d.vocab_size for d in datas}
    if len(vocabs) != 1:
        raise ProxyError(f"proxies trained together need one vocabulary; got sizes {sorted(vocabs)}")
    vocab = 64 * math.ceil(vocabs.pop() / 64)
    gcfg = GPTConfig(vocab_size=vocab, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd)
    models = []
    for seed in seeds:
        # The sequential path seeds torch, then builds the model: the same order gives the same init.
        torch.manual_seed(int(seed))
        models.append(GPT(gcfg).to(device))
    rngs = [np.random.default_rng(int(seed)) for seed in seeds]
    names = [n for n, _ in models[0].named_parameters()]  # the tied head appears once, as wte.weight
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_()
              for n in names}
    # configure_optimizer's split, judged per proxy: matrices decay, 1-D gains do not.
    decay = [params[n] for n in names if params[n].dim() - 1 >= 2]
    no_decay = [params[n] for n in names if params[n].dim() - 1 < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel: the same AdamW update in one pass over each tensor (measured on CPU: the
    # step 3-7x cheaper than the default for-loop kernel the sequential path uses, ~1e-7 apart).
    try:
        opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95), fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.95))
    steps, lr_at = lr_schedule(cfg)

    every = math.ceil(steps / 100)
    curves: list[list[float]] = [[] for _ in range(P)]
    acc = np.zeros(P)
    plist = list(params.values())
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        windows = np.stack([d.sample_windows(r, cfg.batch_size, cfg.block_size) for d, r in zip(datas, rngs)])
        batch = torch.from_numpy(windows).to(device)
        opt.zero_grad(set_to_none=True)
        losses = _forward_backward(params, cfg.n_layer, cfg.n_head, batch[:, :, :-1], batch[:, :, 1:], autocast)
        with torch.no_grad():
            # clip_grad_norm_(model.parameters(), 1.0) of each proxy, on its own slice.
            norms = torch.stack([p.grad.reshape(P, -1).float().pow(2).sum(1) for p in plist]).sum(0).sqrt()
            coef = (1.0 / (norms + 1e-6)).clamp(max=1.0)
            for p in plist:
                p.grad.mul_(coef.view(P, *([1] * (p.dim() - 1))).to(p.grad.dtype))
        opt.step()
        acc += np.asarray(losses.detach().float().cpu().tolist())
        if (step + 1) % every == 0 or step == steps - 1:
            n = every if (step + 1) % every == 0 else (step + 1) % every
            for i in range(P):
                curves[i].append(float(acc[i] / n))
            acc[:] = 0.0
    with torch.no_grad():
        for i, model in enumerate(models):
            own = dict(model.named_parameters())
            for n in names:
                own[n].copy_(params[n][i])
            model.eval()
    del params, opt
    train_s = time.perf_counter() - t0
    tokens_seen = steps * cfg.batch_size * cfg.block_size

    def scorer(model):
        return lambda seqs: gpt_logprobs(model, seqs, cfg.block_size, device, autocast)

    # The training time is shared: each proxy is charged an equal part, so the runs' wall_s still
    # add up to the time the round cost.
    return [TrainedProxy("gpt", scorer(m), curves[i], datas[i].epochs, tokens_seen, m.num_params(), train_s / P)
            for i, m in enumerate(models)]


def batchable(cfg: ProxyConfig) -> bool:
    return cfg.kind == "gpt"


def group_jobs(jobs: Sequence[ProxyJob], cap: int, workers: int = 1) -> list[list[ProxyJob]]:
    """Jobs cut into groups trained together: at most `cap` each (search.batch_proxies), and at
    least as many groups as parallel workers, so a pool of 2 still trains two groups at once."""
    if not jobs:
        return []
    cap = max(1, int(cap))
    n_groups = max(math.ceil(len(jobs) / cap), min(max(1, workers), len(jobs)))
    size = math.ceil(len(jobs) / n_groups)
    return [list(jobs[i:i + size]) for i in range(0, len(jobs), size)]


def run_proxy_group(jobs: Sequence[ProxyJob]) -> list[ProxyResult | BaseException]:
    """`run_proxy_job` of every job, the GPTs trained together; one outcome per job, in order.

    A job that cannot start (bad weights, missing clusters) or scores non-finite fails alone; if the
    stacked training itself raises, the group falls back to training its jobs one at a time, so a
    fault there costs time, never another run's result."""
    from climb_core.proxy.job import job_inputs, job_result, run_proxy_job

    t0 = time.perf_counter()
    out: list[ProxyResult | BaseException | None] = [None] * len(jobs)
    ready = []  # (index, job, data, ctx)
    for i, job in enumerate(jobs):
        try:
            files, ctx = job_inputs(job)
            data = MixtureData.from_token_files(files, job.cluster_ids, job.weights, ctx["tokenizer"].get_vocab_size(),
                                             job.pool_fraction)
            ready.append((i, job, data, ctx))
        except Exception as err:  # noqa: BLE001 - this job's failure, not the group's
            out[i] = err
    if len(ready) == 1 or (ready and not batchable(ready[0][1].proxy)):
        for i, job, _, _ in ready:
            out[i] = _safe(run_proxy_job, job)
        return out
    if ready:
        try:
            proxies = train_gpt_batched(ready[0][1].proxy, [d for _, _, d, _ in ready], [j.seed for _, j, _, _ in ready])
        except Exception:  # noqa: BLE001 - retried one at a time below, where each failure is its own
            for i, job, _, _ in ready:
                out[i] = _safe(run_proxy_job, job)
            return out
        setup_s = (time.perf_counter() - t0 - sum(p.train_s for p in proxies)) / len(ready)
        for (i, job, _, ctx), proxy in zip(ready, proxies):
            t1 = time.perf_counter()
            try:
                out[i] = job_result(job, proxy, ctx)
                out[i].wall_s = setup_s + proxy.train_s + (time.perf_counter() - t1)
            except Exception as err:  # noqa: BLE001
                out[i] = err
    return out


def _safe(fn, job):
    try:
        return fn(job)
    except Exception as err:  # noqa: BLE001
        return err


__all__ = ["batchable", "group_jobs", "run_proxy_group", "train_gpt_batched"]
