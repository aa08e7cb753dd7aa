"""Mixture search: CLIMB, RegMix, random, uniform and natural over one proxy budget.

The package's modules, each with one job:
  sampling     Dirichlet candidates around the token prior
  constraints  the set of mixtures a search may propose (caps, minimum weight, repetition, pins)
  predictors/  weights -> score models (LightGBM, log-linear mixing law, Gaussian process) and
               the per-round choice between them by cross-validation
  acquisition  proposals that maximise an acquisition over the constraint set
  strategies   what each strategy proposes per round and what it returns as its final mixture
  create       a new search: config checked, the clusters' prior and token counts, its row
  proposals    what each round proposes, written before it trains; the answer a search concludes with
  records      the rows a search keeps in the catalogue, and the recorder thread that writes finished runs
  engine       the loop: rounds, verification, resume, cancel
  final_scale  the final model's token budget, and each cluster's epochs there
  report       a search's summary and its JSON-ready report
  scaling      scaling mode: the best mixtures retrained at a larger scale, scores carried to the final scale
  study        many searches on one target, compared on a larger final model
  synthetic    a known-optimum objective, to check the strategies without training proxies
"""

from climb_core.search.create import create_search, new_search_id
from climb_core.search.engine import cancel_search, run_search
from climb_core.search.final_scale import cluster_epochs, final_tokens_for, search_final_scale
from climb_core.search.predictors.select import PREDICTORS
from climb_core.search.records import SearchError, list_searches, search_runs
from climb_core.search.report import SearchSummary, search_report, summarize
from climb_core.search.scaling import rank_transfer
from climb_core.search.strategies import STRATEGIES, round_sizes
from climb_core.search.study import create_study, list_studies, run_study, study_report

__all__ = ["PREDICTORS", "create_study", "list_studies", "run_study", "study_report",
           "cluster_epochs", "final_tokens_for", "rank_transfer", "search_final_scale",
           "STRATEGIES", "SearchError", "SearchSummary", "cancel_search", "create_search", "list_searches",
           "new_search_id", "round_sizes", "run_search", "search_report", "search_runs", "summarize"]
