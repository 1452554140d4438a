"""Request and response bodies of the service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from product_search.search.table import SearchOptions, VectorType


class ErrorResponse(BaseModel):
    detail: str


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(
        description="Texts to embed, at most SEARCH_MAX_TEXTS, each non-blank and "
        "at most SEARCH_MAX_TEXT_CHARS characters."
    )
    include: list[Literal["lexical"]] = Field(
        default_factory=list,
        description='"lexical": also each text\'s analysed terms, which the '
        "table's SQL search function takes beside the vector (query_terms).",
    )


class EmbedResponse(BaseModel):
    model: str
    dimension: int
    embeddings: list[list[float]] = Field(description="Unit vectors, one per text.")
    terms: list[list[str]] | None = Field(
        None,
        description='With "include": ["lexical"]: each text\'s analysed terms, '
        "in order (a term may repeat), as BM25 reads them.",
    )


class Range(BaseModel):
    """Bounds of a numeric column, either or both, inclusive."""

    model_config = ConfigDict(extra="forbid")

    min: StrictFloat | StrictInt | None = None
    max: StrictFloat | StrictInt | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both.")
        return self


#: Column -> the values it may hold (any of them), or a range of a numeric one.
Filters = dict[
    str,
    Annotated[list[StrictStr | StrictFloat | StrictInt], Field(min_length=1)] | Range,
]
FILTERS_DESCRIPTION = (
    "Only products whose columns match, applied inside each lane before fusion: "
    '{"category": ["Paint", "Tools"], "brand": ["Acme"], "price": {"min": 10, '
    '"max": 50}}. A filter on a column the table lacks is a 422 naming the '
    "columns it has."
)


def filters_json(filters: Filters | None) -> dict[str, Any]:
    """The filters as the table's search function takes them."""
    return {
        column: wanted.model_dump(exclude_none=True)
        if isinstance(wanted, Range)
        else wanted
        for column, wanted in (filters or {}).items()
    }


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(description="What the shopper typed.")
    k: StrictInt | None = Field(
        None,
        description="How many products, 1 to SEARCH_MAX_K (default SEARCH_DEFAULT_K).",
    )
    mode: Literal["hybrid", "dense", "lexical"] = Field(
        "hybrid",
        description="hybrid: BM25 and vectors fused; dense: vectors only; "
        "lexical: BM25 only (no results when no product holds a query term).",
    )
    rerank: bool = Field(
        True,
        description="Reorder the top hits with the deployed reranker, when there "
        "is one; false serves the retrieval order.",
    )
    filters: Filters | None = Field(None, description=FILTERS_DESCRIPTION)


class SearchHit(BaseModel):
    """A product, its score in the requested mode and the evidence of each
    lane; further display columns of the table appear as extra fields."""

    model_config = ConfigDict(extra="allow")

    product_id: str
    score: float = Field(
        description="hybrid: the fused score; dense: cosine similarity; lexical: BM25."
    )
    dense_rank: int | None = Field(
        None, description="Rank among the dense candidates (1 = nearest)."
    )
    dense_score: float | None = Field(None, description="Cosine similarity.")
    lexical_rank: int | None = Field(
        None, description="Rank among the BM25 candidates (1 = best)."
    )
    lexical_score: float | None = Field(None, description="BM25 score.")
    rerank_score: float | None = Field(
        None, description="The reranker's score, where it reordered the hit."
    )
    title: str | None = None
    brand: str | None = None
    category: str | None = None
    price: float | None = None


class SearchResponse(BaseModel):
    model: str
    query: str
    k: int
    mode: str
    reranked: bool = Field(description="Whether the reranker ordered the results.")
    results: list[SearchHit]


class TableVersion(BaseModel):
    name: str
    search_function: str = Field(
        description="The SQL function that searches the table as /search does "
        "without reranking (docs/search.md, The SQL search function)."
    )
    version: str
    model: str | None
    dimension: int
    vector_type: VectorType = Field(
        "vector",
        description="How the table stores its vectors (halfvec: 2-byte "
        "floats); the search function casts the query vector to it.",
    )
    row_count: int
    created_at: datetime
    analyzer: str | None = None
    bm25_k1: float | None = None
    bm25_b: float | None = None
    vocabulary_size: int | None = None
    search_options: dict[str, Any] | None = Field(
        None, description="The fusion tuned for the table's model."
    )
    reranker: dict[str, Any] | None = Field(
        None, description="The reranker deployed with the table."
    )


class PromotionDecision(BaseModel):
    """The promotion gate's last decision (promotion_decision.json)."""

    deploy: bool = Field(description="Whether that run deployed its candidate.")
    promote: bool = Field(description="The gate's own verdict, before any force.")
    forced: bool = False
    reason: str
    serving_model: str
    candidate_model: str
    metric: str | None = None
    queries: str | None = None
    decided_at: str | None = None


class Batcher(BaseModel):
    """How concurrent requests are gathered into one encode (SEARCH_MAX_*)."""

    max_batch_texts: int = Field(description="Texts per encode.")
    max_wait_ms: float = Field(
        description="How long an idle batcher waits for more requests."
    )
    max_queue_texts: int = Field(
        description="Texts that may wait; past that, requests get a 503."
    )
    queued_texts: int = Field(description="Texts waiting now.")


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "no_table", "error"] = Field(
        description="ok: ready to search; degraded: searching, but not with what "
        "the project asked for (see fallbacks and detail); no_table: the "
        "deployment pipeline has not run yet (/embed works); error: the table "
        "cannot be read, see detail (HTTP 503)."
    )
    model: str
    dimension: int
    backend: str = Field(
        description="What runs the model: torch, onnx (fp32) or onnx-int8."
    )
    batcher: Batcher
    database: bool = Field(description="Whether the database answered.")
    table: TableVersion | None = None
    model_matches_table: bool | None = Field(
        None,
        description="Whether the table's vectors come from the served model; "
        "searching vectors of another model gives meaningless results.",
    )
    reranker: dict[str, Any] | None = Field(
        None,
        description="The reranker /search uses (model, top_n, text_columns, weight, "
        "and the backend that runs it: torch, onnx (fp32) or onnx-int8), or null.",
    )
    reranker_reason: str | None = Field(
        None,
        description="Why /search does not rerank (e.g. the tuned weight is 0, or "
        "the evaluation found that the reranker lowers relevance), when it does not.",
    )
    search_options: SearchOptions = Field(
        description="How /search fuses its lanes: the table's tuned fusion, with "
        "any SEARCH_* setting in its place."
    )
    promotion: PromotionDecision | None = Field(
        None,
        description="Why the served model serves: the promotion gate's last "
        "decision (a refused candidate leaves the table as it was).",
    )
    api_key_required: bool = Field(
        description="Whether /embed, /search and /review need "
        "`Authorization: Bearer <key>` (SEARCH_API_KEY)."
    )
    fallbacks: list[str] = Field(
        description="What the service serves in place of what the project asked "
        "for, each with why (e.g. the catalog's model when the table's cannot be "
        "loaded, the fp32 reranker when the int8 graph is missing); any makes "
        "the status degraded."
    )
    detail: str | None = None


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(description="What the shopper typed.")
    k: StrictInt | None = Field(
        None,
        description="Hits per column, 1 to SEARCH_MAX_K (default SEARCH_DEFAULT_K).",
    )
    filters: Filters | None = Field(None, description=FILTERS_DESCRIPTION)


class ReviewHit(BaseModel):
    """A hit of one column: its rank there, its scores in each lane, and its
    human grade when the query is judged (None: this product is unjudged)."""

    rank: int
    product_id: str
    title: str | None = None
    score: float = Field(description="The column's own score (see /search).")
    dense_score: float | None = None
    lexical_score: float | None = None
    rerank_score: float | None = None
    grade: int | None = None


class ReviewColumn(BaseModel):
    name: str = Field(description="e.g. 'dense (served model)' or 'hybrid'.")
    model: str | None = Field(None, description="The model that encoded the query.")
    hits: list[ReviewHit]
    ndcg: float | None = Field(
        None,
        description="NDCG@10 of the column's first 10 hits (linear gains, as in "
        "the evaluation), for a judged query; null otherwise.",
    )


class ReviewResponse(BaseModel):
    query: str
    k: int
    judged: bool = Field(description="Whether the relevance judgments hold the query.")
    judged_queries: int = Field(description="How many queries the judgments hold.")
    columns: list[ReviewColumn]
