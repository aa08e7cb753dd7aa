"""Mixture search: CLIMB, RegMix, random, uniform and natural over one proxy budget.

The package's modules, each with one job:
  sampling     Dirichlet candidates around the token prior
  constraints  the set of mixtures a search may propose (caps, minimum weight, repetition, pins)
  predictors/  weights -> score models (LightGBM, log-linear mixing law, Gaussian process) and
               the per-round choice between them by cross-validation
  acquisition  proposals that maximise an acquisition over the constraint set
  strategies   what each strategy proposes per round and what it returns as its final mixture
  engine       the loop: rounds, verification, resume, cancel, and the rows it keeps in the catalogue
  study        many searches on one target, compared on a larger final model
"""

from climb_core.search.engine import (STRATEGIES, SearchError, SearchSummary, cancel_search, create_search,
                                      list_searches, new_search_id, run_search, search_report,
                                      search_runs, summarize)

from climb_core.search.predictors.select import PREDICTORS
from climb_core.search.strategies import round_sizes
from climb_core.search.study import create_study, list_studies, run_study, study_report

__all__ = ["PREDICTORS", "create_study", "list_studies", "run_study", "study_report",
           "STRATEGIES", "SearchError", "SearchSummary", "cancel_search", "create_search", "list_searches",
           "new_search_id", "round_sizes", "run_search", "search_report", "search_runs", "summarize"]
