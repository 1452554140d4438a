"""The contracts the evaluation hands to the deployment: the promotion gate's
verdict, the fusion chosen for the model, the reranker that ships with it,
and the release manifest that gathers them. The evaluation writes the
manifest (the catalog's ``release_manifest``); the deployment reads nothing
else of the evaluation's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from product_search.scoring.contracts import Contract
from product_search.search.table import SearchOptions


class Verdict(Contract):
    """The gate's verdict on whether ``candidate_model`` may replace
    ``serving_model`` (:func:`product_search.promotion.promotion_verdict`)."""

    metric: str
    queries: str
    serving_model: str
    candidate_model: str
    serving_value: float
    candidate_value: float
    delta: float
    direction: Literal["better", "worse", "unchanged"]
    significant: bool
    min_gain: float | None
    promote: bool
    reason: str
    comparison: dict[str, Any]


class CrossValidation(Contract):
    """A tuned choice against the default, out of fold, on the judging
    queries (:func:`product_search.pipelines.evaluation.evidence.choose`)."""

    queries: int
    folds: int
    default: float
    tuned: float
    gain: float
    wilcoxon_p_value: float | None
    ci95_low: float
    ci95_high: float
    significant: bool


class LaneFigures(Contract):
    """One source of validation queries: each lane's metric and hybrid's."""

    queries: int
    dense: float
    lexical: float
    hybrid: float


class FusionChoice(Contract):
    """How hybrid search fuses its lanes with ``model``, and why: without
    tuning only the first four fields; with it, what the choice was judged
    on (``validation`` per query source, every candidate's means)."""

    model: str
    options: SearchOptions
    tuned: bool
    reason: str
    metric: str | None = None
    judged_by: str | None = None
    objective: str | None = None
    cross_validation: CrossValidation | None = None
    evidence: dict[str, Any] | None = None
    lane_margin: float | None = None
    validation: dict[str, LaneFigures] = {}
    candidates: list[dict[str, Any]] = []


class JudgingQueries(Contract):
    """Which validation queries judged a choice."""

    sources: list[str]
    count: int


class RerankerWeight(Contract):
    """How much the reranker ``model`` weighs against the hybrid score, and
    why (``model`` None: no reranker was trained)."""

    model: str | None
    weight: float
    tuned: bool
    reason: str
    metric: str | None = None
    queries: JudgingQueries | None = None
    cross_validation: CrossValidation | None = None
    validation: dict[str, float] = {}


class RerankerRelease(Contract):
    """The reranker that ships with the table, or (``model`` None) why none
    does: none was trained, its tuned weight is 0, or it lowers relevance."""

    model: str | None = None
    top_n: int | None = None
    text_columns: list[str] | None = None
    weight: float | None = None
    variant: Literal["fp32", "int8"] | None = None
    reason: str

    @model_validator(mode="after")
    def _shipped_fully(self) -> RerankerRelease:
        settings = (self.top_n, self.text_columns, self.weight, self.variant)
        if self.model is not None and None in settings:
            raise ValueError(
                "A shipped reranker needs its top_n, text_columns, weight and variant."
            )
        if self.model is not None and self.weight == 0:
            raise ValueError("A reranker of weight 0 would not change the order.")
        return self

    def record(self) -> dict[str, Any]:
        """What the search table's version records, and the service reads."""
        if self.model is None:
            return {"reason": self.reason}
        return self.model_dump(exclude={"reason"})


class ReleaseManifest(Contract):
    """What the deployment may ship: the model the evaluation judged, the
    gate's verdict on it, the fusion tuned for it, and its reranker."""

    model: str
    verdict: Verdict
    fusion: FusionChoice

    reranker: RerankerRelease

    @model_validator(mode="after")
    def _one_model(self) -> ReleaseManifest:
        judged = {self.verdict.candidate_model, self.fusion.model}
        if judged != {self.model}:
            raise ValueError(
                f"The manifest's model is {self.model}, but its verdict judged "
                f"{self.verdict.candidate_model} and its fusion was tuned for "
                f"{self.fusion.model}."
            )
        return self
