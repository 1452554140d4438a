"""What scoring hands on, typed: the evaluation set every model is scored on,
and one model's evaluation. Each is saved and loaded by one catalog dataset
(:class:`product_search.datasets.ContractDataset`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Contract(BaseModel):
    """What every contract between stages is: a key a stale or hand-edited
    file misspells must fail, not vanish; and nothing changes it on the way."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Corpus(Contract):
    """The catalog, column by column."""

    product_id: list[str]
    title: list[str]
    text: list[str]

    @model_validator(mode="after")
    def _aligned(self) -> Corpus:
        if not len(self.product_id) == len(self.title) == len(self.text):
            raise ValueError("The corpus's columns differ in length.")
        return self


class TestQueries(Contract):
    """The held-out queries, each with the one product it was written for."""

    __test__ = False  # not a pytest class, whatever its name

    query_id: list[str]
    query: list[str]
    product_id: list[str]

    @model_validator(mode="after")
    def _aligned(self) -> TestQueries:
        if not len(self.query_id) == len(self.query) == len(self.product_id):
            raise ValueError("The test queries' columns differ in length.")
        return self


class Judged(Contract):
    """Real queries with graded human judgments: ``qrels`` maps a query id to
    ``{product_id: relevance}``."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    counts: dict[str, int]


class EvaluationSet(Contract):
    """What both models are scored on; ``judged`` is None without judgments."""

    corpus: Corpus
    test_queries: TestQueries
    judged: Judged | None = None


class RealQueryMetrics(Contract):
    """Graded metrics on the judged queries: the means and each query's value."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]


class SearchExample(Contract):
    """A sample query's top products: ``results`` of product_id, title, score."""

    query: str
    results: list[dict[str, Any]]


class ModelEvaluation(Contract):
    """One model scored by exact search over the catalog."""

    model_id: str
    metrics: dict[str, float]
    per_query_ndcg: dict[str, float]
    real_queries: RealQueryMetrics | None = None
    examples: list[SearchExample]
