"""What a search table is and what a search returns: the table's spec and
names, the fusion options of a search, a hit, and the limits they are held to."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from product_search.errors import UserError
from product_search.search.index import MODEL_COLUMN, VECTOR_COLUMN

TERMS_COLUMN = "terms"
BM25_COLUMN = "bm25"
#: Columns a search hit never shows.
HIDDEN_COLUMNS = (VECTOR_COLUMN, MODEL_COLUMN)
#: Names of the table's lexical columns and of a hit's own fields.
RESERVED_COLUMNS = (
    TERMS_COLUMN, BM25_COLUMN, "score", "dense_rank", "dense_score",
    "lexical_rank", "lexical_score",
)  # fmt: skip

# Lower case so that quoted and unquoted SQL agree; short enough to leave room
# for the suffixes of the staging tables, their indexes and the versions table.
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")
COLUMN = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# pgvector's HNSW index takes vectors of at most 2,000 dimensions.
MAX_INDEXED_DIMENSION = 2000
HNSW_LIMITS = {"m": (2, 100), "ef_construction": (4, 1000)}
MAX_EF_SEARCH = 1000
DEFAULT_INDEX_ARGS: dict[str, int] = {"m": 16, "ef_construction": 64}
# How the embedding column stores its vectors, and the HNSW operator class of
# each: halfvec (2-byte floats) halves the table and the index; the query
# vector is cast to the column's type (search_function.sql).
VECTOR_OPS = {"vector": "vector_cosine_ops", "halfvec": "halfvec_cosine_ops"}
VectorType = Literal["vector", "halfvec"]
# HNSW builds are much slower once the graph outgrows maintenance_work_mem.
DEFAULT_SAVE_ARGS: dict[str, Any] = {
    "maintenance_work_mem": "512MB",
    "max_parallel_maintenance_workers": None,
    # Columns with a B-tree for the filters of /search, where the table has them.
    "filter_indexes": ["category", "brand", "price"],
}

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "dense", "lexical")


class SearchOptions(BaseModel):
    """How hybrid search fuses its two lanes, and how deep each lane looks.

    ``rrf``: each lane adds ``weight / (rrf_k + rank)`` for a product it
    found. ``weighted``: each lane's scores are scaled to 0..1 over its
    candidates (min-max) and added, times the lane's weight. The defaults were
    chosen on the Home Depot search log, not on any test query
    (bench/results/hybrid_search.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fusion: Literal["rrf", "weighted"] = "rrf"
    rrf_k: int = Field(5, ge=1, le=10_000)
    dense_weight: float = Field(0.5, ge=0)
    lexical_weight: float = Field(1.0, ge=0)
    dense_depth: int = Field(100, ge=1, le=1000, description="Dense candidates.")
    lexical_depth: int = Field(100, ge=1, le=1000, description="BM25 candidates.")
    # Bounded BM25: each query term brings in at most this many products, those
    # with the term's highest BM25 weights, so a common word does not bring in
    # most of a large catalog; a term held by at most this many products brings
    # in all of them (exact below the bound). 0 or None: every product holding a
    # query term (exact BM25), faster on smaller catalogs.
    # bench/results/bounded_bm25.md and scale_1000000.md measure both.
    lexical_bound: int | None = Field(0, ge=0)
    # HNSW candidate list size, raised to dense_depth when that is larger.
    ef_search: int = Field(100, ge=1, le=MAX_EF_SEARCH)
    # A filtered dense lane ranks the matching products exactly when the filter
    # keeps at most this many; above it, it walks the HNSW graph with
    # pgvector's iterative scan. An exact scan's cost grows with the products
    # it scores, the walk's does not, so past some count the walk is cheaper
    # (bench/results/filtered_search.md measures where, and its recall).
    filter_exact_rows: int = Field(2000, ge=0)


@dataclass(frozen=True)
class Hit:
    """A product found by a search, with the evidence of each lane: its rank
    (1 = best) and score there, None where that lane did not return it, and
    the reranker's score where one reranked it."""

    product_id: str
    score: float
    fields: dict[str, Any]
    dense_rank: int | None
    dense_score: float | None
    lexical_rank: int | None
    lexical_score: float | None
    # The cross-encoder's score, when a reranker reordered the hit.
    rerank_score: float | None = None


def check_identifier(kind: str, value: Any, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UserError(
            f"Invalid {kind} {value!r}: use lower-case letters, digits and "
            f"underscores, starting with a letter or underscore "
            f"(pattern {pattern.pattern})."
        )
    return value


def _check_keys(kind: str, given: dict[str, Any], allowed: dict[str, Any]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise UserError(
            f"Unknown {kind} {unknown}; expected some of {sorted(allowed)}."
        )


@dataclass(frozen=True)
class TableSpec:
    """Where a search table lives and how it is indexed, checked on creation
    (``ValueError`` with what to fix), and the names of its parts, every one
    derived from ``table_name``."""

    table_name: str
    dimension: int
    schema: str | None = None
    vector_type: VectorType = "vector"
    index_args: dict[str, Any] = field(default_factory=dict)
    save_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_identifier("table name", self.table_name, IDENTIFIER)
        if self.schema is not None:
            check_identifier("schema", self.schema, IDENTIFIER)
        dimension = self.dimension
        if (
            isinstance(dimension, bool)
            or not isinstance(dimension, int)
            or not 1 <= dimension <= MAX_INDEXED_DIMENSION
        ):
            raise UserError(
                f"'dimension' must be an integer from 1 to {MAX_INDEXED_DIMENSION} "
                f"(the most an HNSW index takes), got {dimension!r}."
            )
        if self.vector_type not in VECTOR_OPS:
            raise UserError(
                f"'vector_type' must be one of {sorted(VECTOR_OPS)} (vector: "
                f"4-byte floats; halfvec: 2-byte floats, half the size), got "
                f"{self.vector_type!r}."
            )
        _check_keys("index_args", self.index_args, DEFAULT_INDEX_ARGS)
        index_args = {**DEFAULT_INDEX_ARGS, **self.index_args}
        for key, (low, high) in HNSW_LIMITS.items():
            value = index_args[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"index_args.{key} must be an integer, got {value!r}.")
            if not low <= value <= high:
                raise UserError(
                    f"index_args.{key} must be from {low} to {high}, got {value}."
                )
        if index_args["ef_construction"] < 2 * index_args["m"]:
            raise UserError(
                "index_args.ef_construction must be at least twice index_args.m "
                f"(pgvector's rule), got {index_args}."
            )
        _check_keys("save_args", self.save_args, DEFAULT_SAVE_ARGS)
        object.__setattr__(self, "index_args", index_args)
        object.__setattr__(self, "save_args", {**DEFAULT_SAVE_ARGS, **self.save_args})

    @property
    def vector_ops(self) -> str:
        """The HNSW operator class of the embedding column (cosine)."""
        return VECTOR_OPS[self.vector_type]

    @property
    def lexical_table(self) -> str:
        """Product id, analysed terms and BM25 weights: narrow rows, so that
        scoring thousands of BM25 candidates reads a few pages, not the
        vectors beside them."""
        return f"{self.table_name}_lexical"

    @property
    def terms_table(self) -> str:
        """The vocabulary: term, term id, document frequency."""
        return f"{self.table_name}_terms"

    @property
    def versions_table(self) -> str:
        """One row per save: what was saved and how it is searched."""
        return f"{self.table_name}_versions"

    @property
    def function_name(self) -> str:
        """The SQL function that searches the table (``search_function.sql``)."""
        return f"{self.table_name}_search"

    def qualified(self, name: str) -> str:
        """``schema.name`` (or ``name``), for messages and ``to_regclass``
        (unquoted, which is safe: names are checked lower-case identifiers)."""
        return f"{self.schema}.{name}" if self.schema else name

    @property
    def qualified_name(self) -> str:
        return self.qualified(self.table_name)

    @property
    def qualified_function(self) -> str:
        return self.qualified(self.function_name)
