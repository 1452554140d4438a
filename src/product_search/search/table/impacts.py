"""The lexical lane's postings ordered by impact, for bounded BM25.

``t_impacts`` holds one row per (term, product holding it): the term's id,
the product's BM25 weight for it (the same ``real`` the product's sparsevec
stores) and the product's id, with the B-tree ``t_impacts_top`` on
``(term_id, weight DESC, product_id)``. Walking that index from a term's
first entry yields its products by decreasing weight with their weights, so
the search function reads a term's ``lexical_bound`` highest-weight products
(a few index pages, no table rows) instead of every product holding it. A
common word then brings in at most ``lexical_bound`` candidates per query
term; the candidates are ranked by the sum of the weights read, and only the
best of them are scored exactly with the stored sparsevec. A term held by at
most ``lexical_bound`` products brings in all of them, so below the bound the
lane is exact BM25.

Written by the save beside the lexical table, under a staging name, and
swapped in with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from psycopg import sql
from sqlalchemy import Connection

from product_search.search.index import ID_COLUMN, ProductIndex
from product_search.search.table import sql as q
from product_search.search.table.types import TableSpec

if TYPE_CHECKING:
    from product_search.search.table.schema import Staging

CREATE_IMPACTS = sql.SQL(
    "CREATE TABLE {table} (term_id integer NOT NULL, weight real NOT NULL, "
    "{id} text NOT NULL)"
)
# product_id in the key: the search reads the index alone, ties in a fixed order.
CREATE_IMPACTS_INDEX = sql.SQL(
    "CREATE INDEX {index} ON {table} (term_id, weight DESC, {id})"
)


def table_name(spec: TableSpec) -> str:
    """(term_id, weight, product_id): each term's products by BM25 weight."""
    return f"{spec.table_name}_impacts"


def index_name(spec: TableSpec) -> str:
    return f"{table_name(spec)}_top"


def staging_table(staging: Staging) -> str:
    return f"{staging.spec.table_name}__impacts_new_{staging.token}"


def staging_index(staging: Staging) -> str:
    return staging.index("impacts")


def postings(index: ProductIndex, product_ids: list[Any]) -> Iterator[tuple]:
    """(term id, weight, product id) of every weight of every product, in the
    index's order (term, then weight from highest): a term's best postings then
    lie on a few neighbouring pages, and the planner, seeing the table in index
    order, walks the index for a common term rather than sorting its postings."""
    lengths = [len(weights) for weights in index.lexical.weights]
    rows = np.repeat(np.arange(len(lengths)), lengths)
    terms = np.fromiter(
        (t for weights in index.lexical.weights for t in weights), np.int32, len(rows)
    )
    values = np.fromiter(
        (w for weights in index.lexical.weights for w in weights.values()),
        np.float32,
        len(rows),
    )
    for i in np.lexsort((rows, -values, terms)):
        yield int(terms[i]), float(values[i]), product_ids[rows[i]]


def load(conn: Connection, staging: Staging, index: ProductIndex) -> None:
    """Create the staging impacts table and COPY every posting into it."""
    spec = staging.spec
    table = q.name(spec, staging_table(staging))
    q.execute(conn, CREATE_IMPACTS.format(table=table, id=sql.Identifier(ID_COLUMN)))
    product_ids = [str(p) for p in index.products[ID_COLUMN]]
    q.copy_rows(
        conn,
        table,
        ["term_id", "weight", ID_COLUMN],
        ["int4", "float4", "text"],
        postings(index, product_ids),
    )


def create_index(conn: Connection, staging: Staging) -> None:
    """The (term_id, weight DESC, product_id) B-tree and the statistics."""
    spec = staging.spec
    table = q.name(spec, staging_table(staging))
    q.execute(
        conn,
        CREATE_IMPACTS_INDEX.format(
            index=sql.Identifier(staging_index(staging)),
            table=table,
            id=sql.Identifier(ID_COLUMN),
        ),
    )
    q.execute(conn, q.ANALYZE.format(table=table))


def swap(conn: Connection, staging: Staging) -> None:
    """Replace the live impacts table by the staging one (same transaction)."""
    spec = staging.spec
    q.execute(conn, q.DROP_TABLE.format(table=q.name(spec, table_name(spec))))
    for kind, old, new in (
        ("TABLE", staging_table(staging), table_name(spec)),
        ("INDEX", staging_index(staging), index_name(spec)),
    ):
        q.execute(
            conn,
            q.RENAME.format(
                kind=sql.SQL(kind), old=q.name(spec, old), new=sql.Identifier(new)
            ),
        )
