"""Document quality in [0, 1]: Gopher-style heuristic rules over stored statistics, plus a user hook.

Heuristic rules (each a soft pass value: 1 inside the threshold, falling linearly to 0 at the
"zero at" value, so a document just past a line is not treated like spam):

| rule                     | statistic             | passes when      | zero at   | origin |
|--------------------------|-----------------------|------------------|-----------|--------|
| word count               | n_words               | 50 .. 100,000    | 10 / 200k | Gopher quality filter (Rae et al. 2021, A.1.1) |
| mean word length         | mean_word_len         | 3 .. 10 chars    | 1.5 / 15  | Gopher quality filter |
| symbol-to-word ratio     | symbol_ratio (#, ...) | < 0.1            | 0.3       | Gopher quality filter |
| bullet lines             | bullet_line_frac      | < 0.9            | 1.0       | Gopher quality filter |
| ellipsis lines           | ellipsis_line_frac    | < 0.3            | 0.6       | Gopher quality filter |
| words with a letter      | 1 - non_alpha_word_frac | >= 0.8         | 0.5       | Gopher quality filter |
| stop words               | stopword_count        | >= 2             | 0         | Gopher quality filter |
| repeated lines           | repeated_line_frac    | < 0.3            | 0.6       | Gopher repetition filter (duplicate line fraction) |
| duplicate 5-grams        | dup_ngram_frac        | < 0.15           | 0.45      | Gopher repetition filter (5-gram duplicate character fraction) |
| digits                   | digit_ratio           | < 0.25           | 0.6       | ours: tables of numbers, IDs, hashes (C4 removes code/boilerplate pages in a similar spirit) |

The "zero at" values are ours (Gopher's rules are hard cuts). The score is
`0.5 * mean(pass values) + 0.5 * min(pass values)`: Gopher drops a document that fails any one rule,
so a single hard failure must pull the score below 0.5, while the mean keeps documents that pass
everything but are near several lines ordered below those that are clean.

C4's line-level rules (terminal punctuation, lines of >= 3 words, "lorem ipsum", curly braces) need
statistics the catalogue does not store; they are left to a user scorer.

User hook: `quality.scorer = "module:function"` (or "path/to/file.py:function"), a function taking a
list of texts and returning one float in [0, 1] per text. The combined quality is
`(1 - user_weight) * heuristic + user_weight * user`.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from climb_core.catalogue.stages import StageError


@dataclass(frozen=True)
class Rule:
    name: str
    column: str
    low: float | None  # passes when value >= low ...
    high: float | None  # ... and value <= high
    low_zero: float | None = None  # pass value reaches 0 here (below low)
    high_zero: float | None = None  # pass value reaches 0 here (above high)
    invert: bool = False  # rule is on 1 - value (e.g. share of words *with* a letter)


RULES: tuple[Rule, ...] = (
    Rule("word count", "n_words", 50, 100_000, 10, 200_000),
    Rule("mean word length", "mean_word_len", 3, 10, 1.5, 15),
    Rule("symbol-to-word ratio", "symbol_ratio", None, 0.1, None, 0.3),
    Rule("bullet lines", "bullet_line_frac", None, 0.9, None, 1.0),
    Rule("ellipsis lines", "ellipsis_line_frac", None, 0.3, None, 0.6),
    Rule("words with a letter", "non_alpha_word_frac", 0.8, None, 0.5, None, invert=True),
    Rule("stop words", "stopword_count", 2, None, 0, None),
    Rule("repeated lines", "repeated_line_frac", None, 0.3, None, 0.6),
    Rule("duplicate 5-grams", "dup_ngram_frac", None, 0.15, None, 0.45),
    Rule("digits", "digit_ratio", None, 0.25, None, 0.6),
)


class ScorerError(StageError):
    """The user quality scorer cannot be loaded, or returned something other than floats in [0, 1]."""


def rule_pass(rule: Rule, values: np.ndarray) -> np.ndarray:
    """Soft pass value of one rule: 1 inside its thresholds, linear down to 0 at the zero points."""
    x = 1.0 - values if rule.invert else values
    out = np.ones(len(x), dtype=np.float64)
    if rule.low is not None:
        span = rule.low - rule.low_zero
        out = np.minimum(out, np.clip((x - rule.low_zero) / span, 0.0, 1.0) if span > 0 else (x >= rule.low) * 1.0)
    if rule.high is not None:
        span = rule.high_zero - rule.high
        out = np.minimum(out, np.clip((rule.high_zero - x) / span, 0.0, 1.0) if span > 0 else (x <= rule.high) * 1.0)
    return out


def rule_passes(stats: pd.DataFrame) -> pd.DataFrame:
    """One column of soft pass values per rule (for explaining a score in the dashboard)."""
    return pd.DataFrame({r.name: rule_pass(r, stats[r.column].to_numpy(dtype=np.float64)) for r in RULES},
                        index=stats.index)


def heuristic_quality(stats: pd.DataFrame) -> np.ndarray:
    """Heuristic quality in [0, 1] per row of a `doc_stats`-like frame (see the rule table above)."""
    if len(stats) == 0:
        return np.zeros(0, dtype=np.float64)
    passes = rule_passes(stats).to_numpy()
    return 0.5 * passes.mean(axis=1) + 0.5 * passes.min(axis=1)


def _import_target(spec: str):
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ScorerError(f"quality.scorer {spec!r} must look like 'module:function' or 'path/to/file.py:function'")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.exists():
            raise ScorerError(f"quality.scorer {spec!r}: file {path} not found")
        name = f"climb_user_scorer_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            raise ScorerError(f"quality.scorer {spec!r}: importing {path} failed: {type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ScorerError(f"quality.scorer {spec!r}: cannot import module {module_name!r} ({err}); "
                              "is it on PYTHONPATH (or give a path to the .py file)?") from err
    func = getattr(module, func_name, None)
    if func is None or not callable(func):
        raise ScorerError(f"quality.scorer {spec!r}: module {module_name!r} has no function {func_name!r}")
    return func


def load_user_scorer(spec: str) -> Callable[[list[str]], list[float]]:
    """The user's scorer, wrapped so that a wrong length or a value outside [0, 1] is a clear error."""
    func = _import_target(spec)

    def score(texts: list[str]) -> list[float]:
        try:
            result = func(list(texts))
        except Exception as err:
            raise ScorerError(f"quality.scorer {spec!r} raised {type(err).__name__}: {err}") from err
        try:
            values = [float(v) for v in result]
        except (TypeError, ValueError) as err:
            raise ScorerError(f"quality.scorer {spec!r} must return a list of floats, got {type(result).__name__}") from err
        if len(values) != len(texts):
            raise ScorerError(f"quality.scorer {spec!r} returned {len(values)} scores for {len(texts)} texts")
        bad = [(i, v) for i, v in enumerate(values) if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
        if bad:
            i, v = bad[0]
            raise ScorerError(f"quality.scorer {spec!r} returned {v!r} for text #{i} ({len(bad)} values outside [0, 1])")
        return values

    return score


def combine_quality(heuristic: np.ndarray, user: Sequence[float] | np.ndarray | None, user_weight: float) -> np.ndarray:
    """(1 - w) * heuristic + w * user, or the heuristic alone when there is no user score."""
    heuristic = np.asarray(heuristic, dtype=np.float64)
    if user is None:
        return heuristic
    w = min(max(float(user_weight), 0.0), 1.0)
    return (1.0 - w) * heuristic + w * np.asarray(user, dtype=np.float64)
