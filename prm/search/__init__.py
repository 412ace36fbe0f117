"""PRM-guided test-time search: strategies (`STRATEGIES`: majority, best_of_n, weighted_majority,
beam, dvts), step-at-a-time generators (`GENERATORS`: local transformers with prefix-cache reuse,
vLLM, Claude) and the one answer-selection code (`prm.search.select`)."""

import prm.search.claude  # noqa: F401  (registers the 'claude' generator; anthropic is imported only when it is built)
from prm.search.generate import GENERATORS, Generator, LocalStepGenerator, Partial, make_generator
from prm.search.select import pick, vote
from prm.search.strategies import STRATEGIES, SearchResult, SearchSettings, run_search, solution_score

__all__ = ["GENERATORS", "STRATEGIES", "Generator", "LocalStepGenerator", "Partial", "SearchResult", "SearchSettings",
           "make_generator", "pick", "run_search", "solution_score", "vote"]
