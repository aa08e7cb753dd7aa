"""lm-eval targets: the bundled climb_* task YAMLs, the lm-eval LM wrapper over a trained proxy, and
the project's own multiple-choice scorer checked against lm-eval on the same proxy and items."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lm_eval")

from climb_core.config import ProxyConfig, TargetSpec  # noqa: E402
from climb_core.proxy.targets import evaluate_targets, load_targets, parse_target  # noqa: E402
from climb_core.proxy.train import MixtureData, train_proxy  # noqa: E402
from tests.test_tokens import make_domain_workspace, token_config  # noqa: E402

SETS = ["arc_easy", "piqa", "hellaswag", "winogrande"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from climb_core.pipeline.tokens import cluster_token_files, eot_id, load_tokenizer, run_tokens

    ws = make_domain_workspace(tmp_path_factory.mktemp("lmeval") / "ws", per_domain=40)
    run_tokens(ws, token_config(), progress=False)
    files = cluster_token_files(ws)
    tok = load_tokenizer(ws)
    ids = [f.cluster_id for f in files]
    data = MixtureData.from_token_files(files, ids, [1 / len(ids)] * len(ids), tok.get_vocab_size())
    proxy = train_proxy(ProxyConfig(kind="ngram", tokens=60_000), data, seed=0)
    return ws, proxy, tok, eot_id(tok)


def test_parse_lm_eval_target():
    spec = parse_target("lm-eval:climb_piqa,metric=acc_norm,weight=2")
    assert (spec.kind, spec.path, spec.metric, spec.weight) == ("lm-eval", "climb_piqa", "acc_norm", 2.0)
    assert parse_target("lm-eval:hellaswag").metric == "acc"


@pytest.mark.parametrize("name", SETS)
def test_own_scorer_agrees_with_lm_eval(trained, name):
    """Same proxy, same items: acc and acc_norm equal, every choice's log-likelihood within 1e-4."""
    from lm_eval import simple_evaluate

    from climb_core.proxy.lm_eval_adapter import make_lm, task_manager

    ws, proxy, tok, eot = trained
    spec = TargetSpec(kind="mc", path=f"data/eval/{name}.jsonl", metric="acc", max_items=10_000)
    (target,) = load_targets(ws, [spec], tok)
    _, ours = evaluate_targets(proxy, [target])
    lps = proxy.sequence_logprobs(target.sequences)
    our_ll = np.array([float(lp[s - 1:].sum()) for lp, s in zip(lps, target.cont_start)])

    res = simple_evaluate(model=make_lm(proxy, tok, eot), tasks=[f"climb_{name}"], task_manager=task_manager(),
                          bootstrap_iters=0, log_samples=True, verbosity="ERROR")
    table = res["results"][f"climb_{name}"]
    samples = sorted(res["samples"][f"climb_{name}"], key=lambda s: s["doc_id"])
    their_ll = np.array([float(r[0]) for s in samples for r in s["filtered_resps"]])
    assert len(their_ll) == len(our_ll)
    np.testing.assert_allclose(their_ll, our_ll, atol=1e-4, rtol=0)
    assert table["acc,none"] == pytest.approx(ours[f"{name}/acc"], abs=1e-12)
    assert table["acc_norm,none"] == pytest.approx(ours[f"{name}/acc_norm"], abs=1e-12)


def test_lm_eval_target_scores_a_built_in_proxy(trained):
    ws, proxy, tok, eot = trained
    specs = [parse_target("lm-eval:climb_piqa,metric=acc_norm,max_items=40"),
             parse_target("mc:data/eval/piqa.jsonl,metric=acc_norm,max_items=40")]
    targets = load_targets(ws, specs, tok)
    score, scores = evaluate_targets(proxy, targets)
    assert 0.0 <= scores["climb_piqa/acc_norm"] <= 1.0 and "climb_piqa/acc" in scores
    assert score == pytest.approx((scores["climb_piqa/acc_norm"] + scores["piqa/acc_norm"]) / 2)
