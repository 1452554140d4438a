"""The search table in PostgreSQL: products, their vectors (pgvector HNSW) and
their BM25 weights (pgvector ``sparsevec``, candidates through a GIN index),
searched by dense, lexical or hybrid retrieval in one SQL function.

This is the one home of the database code: the deployment writes through
:meth:`SearchTable.save`, the service and the evaluation read through
:meth:`SearchTable.search`, and the Kedro dataset only wraps them.

``types``: the spec, options and hits; ``errors``: how it fails; ``schema``:
the tables, indexes and search function (the layout is described there);
``writer``: the atomic save; ``sql``: the statements; ``table``: the reader.
"""

from product_search.search.table.errors import (
    DatabaseUnavailableError,
    FilterError,
    SearchError,
    TableMissingError,
)
from product_search.search.table.table import SearchTable
from product_search.search.table.types import (
    MODES,
    Hit,
    Mode,
    SearchOptions,
    TableSpec,
    VectorType,
)

__all__ = [
    "MODES",
    "DatabaseUnavailableError",
    "FilterError",
    "Hit",
    "Mode",
    "SearchError",
    "SearchOptions",
    "SearchTable",
    "TableMissingError",
    "TableSpec",
    "VectorType",
]
