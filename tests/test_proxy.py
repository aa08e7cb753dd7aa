"""Proxies: the n-gram's maths, the mixture sampler, the GPT's training, and a whole proxy job."""

from __future__ import annotations

import math

import numpy as np
import pytest

from climb_core.config import ProxyConfig, TargetSpec
from climb_core.proxy.ngram import KneserNeyLM
from climb_core.proxy.train import MixtureData, ProxyError, train_proxy
from tests.test_tokens import make_domain_workspace, token_config

TINY_GPT = dict(kind="gpt", n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=16,
                learning_rate=3e-3, threads=1, device="cpu")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from climb_core.pipeline.tokens import run_tokens

    ws = make_domain_workspace(tmp_path_factory.mktemp("proxy") / "ws", per_domain=40)
    run_tokens(ws, token_config(), progress=False)
    return ws


@pytest.fixture(scope="module")
def files(ws):
    from climb_core.pipeline.tokens import cluster_token_files

    return cluster_token_files(ws)


def _val_docs(f, eot):
    val = np.fromfile(f.val_path, dtype=f.dtype).astype(np.int64)
    return [np.concatenate([[eot], d]) for d in np.split(val, np.flatnonzero(val == eot) + 1) if len(d) > 1]


def _nats_per_token(proxy, seqs):
    lps = proxy.sequence_logprobs(seqs)
    return -sum(lp.sum() for lp in lps) / sum(len(lp) for lp in lps)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_distributions_sum_to_one(files, order):
    train = [np.fromfile(f.train_path, dtype=f.dtype).astype(np.int64) for f in files[:2]]
    lm = KneserNeyLM(order, 1024, 0.75).fit(train)
    seen = train[0][100:100 + order - 1]
    unseen = np.array([1023, 1022, 1021])[: order - 1]
    for ctx in (seen, unseen, train[1][:0]):
        p = lm.next_distribution(ctx)
        assert p.shape == (1024,) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
    # Scoring a sequence gives the same numbers as the full distributions, position by position.
    seq = train[1][:40]
    lp = lm.logprobs(seq)
    ref = [math.log(lm.next_distribution(seq[:i])[seq[i]]) for i in range(1, len(seq))]
    np.testing.assert_allclose(lp, ref, rtol=1e-12)


def test_ngram_kneser_ney_on_a_hand_example():
    """Bigram KN on 'a b a b a c' (ids a=0, b=1, c=2, V=3), D=0.5, computed by hand."""
    lm = KneserNeyLM(2, 3, 0.5).fit([np.array([0, 1, 0, 1, 0, 2])])
    # Continuation counts: a follows b (twice, one distinct left) -> N1+(.a)=1, b: 1 (after a), c: 1.
    # Unigram: (max(1-0.5,0) + 0.5*3*(1/3)) / 3 = 1/3 each.
    p_uni = 1 / 3
    # After 'a': c(ab)=2, c(ac)=1, c(a)=3, 2 types: p(b|a) = (1.5 + 0.5*2*p_uni)/3.
    p = lm.next_distribution(np.array([0]))
    assert p[1] == pytest.approx((1.5 + 1.0 * p_uni) / 3)
    assert p[2] == pytest.approx((0.5 + 1.0 * p_uni) / 3)
    assert p[0] == pytest.approx((0 + 1.0 * p_uni) / 3)


def test_mixture_draws_follow_weights_and_count_epochs(files):
    ids = [f.cluster_id for f in files[:3]]
    data = MixtureData.from_token_files(files, ids, [0.6, 0.3, 0.1], 1024)
    rng = np.random.default_rng(0)
    for _ in range(200):
        data.sample_windows(rng, 16, 32)
    shares = data.drawn / data.drawn.sum()
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1], atol=0.03)
    sizes = {f.cluster_id: f.n_train for f in files}
    for c, drawn in zip(ids, data.drawn):
        assert data.epochs[c] == pytest.approx(drawn / sizes[c])

    # The n-gram's budget: round(w * tokens) contiguous tokens per cluster; more than a cluster
    # holds wraps around and shows up as more than one epoch.
    data = MixtureData.from_token_files(files, ids, [0.5, 0.5, 0.0], 1024)
    total = 3 * sizes[ids[0]]
    parts = data.contiguous(np.random.default_rng(1), total)
    assert [len(p) for p in parts] == [round(total / 2)] * 2
    assert data.epochs[ids[0]] == pytest.approx(1.5)
    assert ids[2] not in data.epochs
    # Each part is a contiguous run of its cluster's file, wrapping around its end.
    train0 = np.fromfile(files[0].train_path, dtype=files[0].dtype).astype(np.int64)
    cyclic = np.concatenate([train0] * 3)
    n = len(parts[0])
    assert any(np.array_equal(cyclic[o:o + n], parts[0]) for o in np.flatnonzero(train0 == parts[0][0]))


def test_mixture_rejects_bad_weights(files):
    with pytest.raises(ProxyError):
        MixtureData.from_token_files(files, [0, 1], [0.0, 0.0], 1024)
    with pytest.raises(ProxyError, match="token files"):
        MixtureData.from_token_files(files, [0, 99], [0.5, 0.5], 1024)


def test_ngram_prefers_its_own_domain(files, ws):
    """Trained only on legal text, the n-gram predicts held-out legal text better than one trained
    only on literature, and the other way round."""
    from climb_core.pipeline.tokens import load_tokenizer

    eot = load_tokenizer(ws).token_to_id("<|endoftext|>")
    legal, lit = files[1], files[2]
    cfg = ProxyConfig(kind="ngram", tokens=40_000, ngram_order=3)
    on = {}
    for f in (legal, lit):
        data = MixtureData.from_token_files(files, [legal.cluster_id, lit.cluster_id],
                                            [1.0, 0.0] if f is legal else [0.0, 1.0], 1024)
        proxy = train_proxy(cfg, data, seed=0)
        assert proxy.kind == "ngram" and proxy.tokens_seen == 40_000
        on[f.cluster_id] = proxy
    legal_val, lit_val = _val_docs(legal, eot), _val_docs(lit, eot)
    assert _nats_per_token(on[legal.cluster_id], legal_val) < _nats_per_token(on[lit.cluster_id], legal_val) - 0.3
    assert _nats_per_token(on[lit.cluster_id], lit_val) < _nats_per_token(on[legal.cluster_id], lit_val) - 0.3


def test_gpt_loss_falls_and_prefers_its_domain(files, ws):
    from climb_core.pipeline.tokens import load_tokenizer

    eot = load_tokenizer(ws).token_to_id("<|endoftext|>")
    legal, lit = files[1], files[2]
    cfg = ProxyConfig(tokens=100 * 16 * 64, **TINY_GPT)
    proxies = {}
    for f in (legal, lit):
        data = MixtureData.from_token_files(files, [f.cluster_id], [1.0], 1024)
        proxies[f.cluster_id] = train_proxy(cfg, data, seed=0)
    p = proxies[legal.cluster_id]
    assert p.kind == "gpt" and p.tokens_seen == 100 * 16 * 64
    curve = p.loss_curve
    assert len(curve) <= 101 and all(math.isfinite(x) for x in curve)
    assert curve[0] > math.log(1024) - 0.5          # starts near uniform over the vocabulary
    assert np.mean(curve[-10:]) < curve[0] - 1.5     # and learns
    assert p.epochs[legal.cluster_id] > 0
    legal_val = _val_docs(legal, eot)
    assert _nats_per_token(proxies[legal.cluster_id], legal_val) < _nats_per_token(proxies[lit.cluster_id], legal_val) - 0.2


def test_gpt_windows_agree_with_one_forward_pass():
    """Scoring in windows (sequences longer than the context) matches a direct forward pass where it can."""
    import torch

    from climb_core.proxy.model import GPT, GPTConfig
    from climb_core.proxy.train import gpt_logprobs

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32)).eval()
    rng = np.random.default_rng(0)
    short, long = rng.integers(0, 64, 12), rng.integers(0, 64, 40)
    out = gpt_logprobs(model, [short, long], 16, "cpu", torch.autocast("cpu", enabled=False))
    assert [len(o) for o in out] == [11, 39]
    with torch.no_grad():
        def direct(x):
            logits, _ = model(torch.from_numpy(x[:-1])[None])
            return torch.log_softmax(logits, -1)[0, torch.arange(len(x) - 1), torch.from_numpy(x[1:])].numpy()
        np.testing.assert_allclose(out[0], direct(short), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out[1][:16], direct(long[:17]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out[1][16:32], direct(long[16:33]), rtol=1e-5, atol=1e-5)
        # The tail window is aligned to the end, so the last 7 targets keep a full 16-token context.
        np.testing.assert_allclose(out[1][-7:], direct(long[-17:])[-7:], rtol=1e-5, atol=1e-5)


def test_model_sizes_by_config():
    from climb_core.proxy.model import GPT, GPTConfig

    small = GPT(GPTConfig(vocab_size=512, block_size=32, n_layer=1, n_head=2, n_embd=32))
    assert small.num_params() < 100_000
    assert small.lm_head.weight is small.wte.weight


@pytest.mark.parametrize("kind", ["ngram", "gpt"])
def test_run_proxy_job_end_to_end(ws, kind):
    from climb_core.proxy.job import run_proxy_job
    from climb_core.proxy.types import ProxyJob

    proxy = ProxyConfig(kind="ngram", tokens=30_000) if kind == "ngram" else ProxyConfig(tokens=20 * 16 * 64, **TINY_GPT)
    targets = [TargetSpec(kind="mc", path="data/eval/arc_easy.jsonl", metric="loglik", max_items=40),
               TargetSpec(kind="text", path="cluster:1", metric="neg_bpb", max_items=5, weight=2.0)]
    job = ProxyJob(workspace=str(ws.root), search_id="s", run_id="r1", round=1, cluster_ids=[0, 1, 2, 3, 4],
                   weights=[0.1, 0.4, 0.2, 0.2, 0.1], seed=3, proxy=proxy, targets=targets)
    res = run_proxy_job(job)
    assert res.run_id == "r1" and math.isfinite(res.score) and res.host
    assert set(res.scores) == {"arc_easy/acc", "arc_easy/acc_norm", "arc_easy/loglik", "cluster-1/neg_bpb"}
    assert res.score == pytest.approx((res.scores["arc_easy/loglik"] + 2 * res.scores["cluster-1/neg_bpb"]) / 3)
    assert -12 < res.scores["cluster-1/neg_bpb"] < 0 and 0 <= res.scores["arc_easy/acc"] <= 1
    assert set(res.epochs) == {0, 1, 2, 3, 4} and res.tokens > 0
    # A second job in the same process reuses the cached targets and, with the same seed, repeats exactly.
    assert run_proxy_job(job).score == pytest.approx(res.score, rel=1e-6)
