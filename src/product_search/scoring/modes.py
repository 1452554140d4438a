"""The search-mode results, typed: every mode measured through the search
table as ``/search`` runs it, the reranker's verdict and served variant, and
the check of what ``/search`` serves against its own lanes. Saved and loaded
by one catalog dataset (``search_mode_metrics``)."""

from __future__ import annotations

from typing import Literal

from product_search.release import FusionChoice, Verdict
from product_search.scoring.contracts import Contract
from product_search.search.table import SearchOptions

# {mode: {metric: mean over the queries}}
ModeMetrics = dict[str, dict[str, float]]


class RerankerVariant(Contract):
    """Which graph of the reranker serves: int8 when it loses at most
    ``max_int8_loss`` of the metric against fp32 on the judging queries."""

    metric: str
    queries: str
    fp32: float
    int8: float
    int8_change: float
    max_int8_loss: float
    serve: Literal["fp32", "int8"]
    top_n: int


class RerankerResult(Contract):
    """The trained reranker, whether it ships (``deploy``) and why. Without
    ``verdict`` it was not run: its weight is 0, so it would not change the
    order."""

    model: str
    top_n: int
    text_columns: list[str]
    weight: float
    deploy: bool
    reason: str
    weight_reason: str | None = None
    verdict: Verdict | None = None
    variant: RerankerVariant | None = None


class LaneComparison(Contract):
    """What ``/search`` serves against one of its lanes, per query, paired."""

    mean_delta: float
    wilcoxon_p_value: float | None
    ci95_low: float
    ci95_high: float


class LaneCheck(Contract):
    """Whether what ``/search`` serves (``served``) ranks significantly below
    one of its own lanes (``below``) on ``queries``."""

    queries: str
    metric: str
    served: str
    below: list[str]
    comparisons: dict[str, LaneComparison]


class SearchModeResults(Contract):
    """Each mode's metrics on the held-out queries and, with judgments, the
    real ones; the fusion each model searched with and why."""

    metrics: list[str]
    k: int
    options: dict[str, SearchOptions]
    tuning: dict[str, FusionChoice]
    test_queries: ModeMetrics
    real_queries: ModeMetrics | None = None
    reranker: RerankerResult | None = None
    lane_check: LaneCheck

    def served_mode(self) -> str:
        """The mode ``/search`` serves with the fine-tuned model."""
        shipped = self.reranker is not None and self.reranker.deploy
        return "hybrid_rerank_fine_tuned" if shipped else "hybrid_fine_tuned"
