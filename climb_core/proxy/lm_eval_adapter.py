"""lm-evaluation-harness targets for the built-in proxies: a trained proxy and CLIMB's tokenizer
wrapped as an lm-eval `LM`, so any lm-eval task can score them (`--target lm-eval:TASK`).

Requests are encoded as lm-eval's Hugging Face model encodes them: the context's trailing
whitespace moves onto the continuation, the context is tokenised alone and the continuation is
what the whole string adds after it; every sequence starts with the end-of-text token (the proxies
train on documents that start after one), which is also the whole context of an empty one. The
proxies return log-probabilities of the observed tokens only, so `is_greedy` is not computed
(False): it matters only for tasks scored by greedy match (lambada's acc), not multiple choice.
Generation tasks are refused. lm-eval is optional: `pip install 'climb-studio[lm-eval]'`.

The bundled climb_* tasks (climb_core/proxy/lm_eval_tasks) are always on the include path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from climb_core.proxy.lm_eval_tasks import BUNDLED_TASKS_DIR

_TASK_MANAGERS: dict[tuple[str, ...], Any] = {}


class LmEvalMissing(ImportError):
    pass


def require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        raise LmEvalMissing("lm-eval targets need lm-evaluation-harness: pip install 'climb-studio[lm-eval]' "
                            "(or pip install lm-eval)") from err
    import lm_eval

    return lm_eval


def include_paths(include: list[str] | tuple[str, ...] = ()) -> list[str]:
    paths = [str(Path(p).expanduser().resolve()) for p in include]
    for p in paths:
        if not Path(p).is_dir():
            raise FileNotFoundError(f"lm-eval include folder {p} does not exist (target.lm_eval_include)")
    return [str(BUNDLED_TASKS_DIR), *paths]


def task_manager(include: list[str] | tuple[str, ...] = ()):
    """One lm-eval TaskManager per include set: indexing lm-eval's task folder takes seconds."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    key = tuple(include_paths(include))
    if key not in _TASK_MANAGERS:
        _TASK_MANAGERS[key] = TaskManager(include_path=list(key))
    return _TASK_MANAGERS[key]


def encode_request(tokenizer, eot: int, context: str, continuation: str) -> tuple[np.ndarray, int]:
    """(tokens [EOT, context..., continuation...], index of the first continuation token)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    ctx = tokenizer.encode(context, add_special_tokens=False).ids if context else []
    whole = tokenizer.encode(context + continuation, add_special_tokens=False).ids
    if len(whole) <= len(ctx):
        raise ValueError(f"continuation {continuation!r} tokenised to nothing")
    return np.array([eot, *whole], dtype=np.int64), 1 + len(ctx)


def make_lm(proxy, tokenizer, eot: int, batch: int = 64):
    """The proxy as an lm-eval LM (built here so lm-eval stays an optional import)."""
    require_lm_eval()
    from lm_eval.api.model import LM

    class ProxyLM(LM):
        def loglikelihood(self, requests, disable_tqdm: bool = True):
            encoded = [encode_request(tokenizer, eot, *req.args) for req in requests]
            out = []
            for lo in range(0, len(encoded), batch):
                part = encoded[lo:lo + batch]
                lps = proxy.sequence_logprobs([seq for seq, _ in part])
                # lp[j] scores token j + 1, so the continuation starting at token s is lp[s - 1:].
                out += [(float(np.sum(lp[s - 1:])), False) for lp, (_, s) in zip(lps, part)]
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = True):
            seqs = [np.array([eot, *tokenizer.encode(req.args[0], add_special_tokens=False).ids], dtype=np.int64)
                    for req in requests]
            return [float(np.sum(lp)) for lp in proxy.sequence_logprobs(seqs)]

        def generate_until(self, requests, disable_tqdm: bool = True):
            raise NotImplementedError("the built-in proxies do not generate; use a loglikelihood or "
                                      "multiple-choice lm-eval task, or a command proxy")

    return ProxyLM()


def evaluate(proxy, tokenizer, eot: int, tasks: list[str], include: list[str] | tuple[str, ...] = (),
             limit: int | None = None) -> dict[str, Any]:
    """lm-eval's results table for `tasks` scored by the proxy."""
    require_lm_eval()
    from lm_eval import simple_evaluate

    res = simple_evaluate(model=make_lm(proxy, tokenizer, eot), tasks=list(tasks), task_manager=task_manager(include),
                          limit=limit or None, bootstrap_iters=0, log_samples=False, verbosity="ERROR",
                          random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    return res["results"]


def score_specs(proxy, tokenizer, eot: int, specs: list, include: list[str] | tuple[str, ...] = ()) -> dict[str, float]:
    """Every metric of the lm-eval targets in `specs`, as {'task/metric': value} (see command.lm_eval_metrics)."""
    from climb_core.proxy.command import lm_eval_metrics

    tasks = list(dict.fromkeys(s.path for s in specs))
    limit = max((int(s.max_items) for s in specs), default=0)
    metrics = lm_eval_metrics(evaluate(proxy, tokenizer, eot, tasks, include, limit=limit or None))
    for s in specs:
        key = f"{s.path}/{s.metric}"
        if key not in metrics or not math.isfinite(metrics[key]):
            have = sorted(k for k in metrics if k.startswith(f"{s.path}/"))
            raise ValueError(f"lm-eval task {s.path!r} reported no {s.metric!r}; it reports {have}")
    return metrics
