"""The search table's layout in PostgreSQL: its tables, indexes and search
function, created by a save.

Layout of a table ``t`` (every name derived from ``t``)::

    t            product_id, display columns, model, embedding vector(d)
                 (or halfvec(d), the spec's vector_type)
                 indexes: t_pkey, t_hnsw (vector_cosine_ops or
                 halfvec_cosine_ops), a B-tree per
                 column of save_args.filter_indexes the products have
    t_lexical    product_id, terms text[] (the analysed terms), bm25 sparsevec
                 indexes: t_lexical_pkey, t_lexical_terms_gin
    t_terms      term, term_id, document_frequency: the vocabulary
    t_impacts    term_id, weight, product_id: each term's products by BM25
                 weight, for bounded BM25 (impacts.py); index: t_impacts_top
    t_versions   one row per save: model, dimension, vector type, rows,
                 HNSW settings,
                 analyser, BM25 k1 and b, vocabulary size, average length,
                 the fusion tuned for the model (search_options), the
                 reranker shipped with it (reranker)
    t_search     the search function (search_function.sql)

A save creates ``t``, ``t_lexical`` and ``t_terms`` under the staging names of
:class:`Staging`, and the swap gives them their own.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pandas as pd
from psycopg import sql
from sqlalchemy import Connection

from product_search.search.index import (
    ID_COLUMN,
    MODEL_COLUMN,
    VECTOR_COLUMN,
    ProductIndex,
)
from product_search.search.table import impacts
from product_search.search.table import sql as q
from product_search.search.table.errors import SearchError
from product_search.search.table.types import (
    BM25_COLUMN,
    HIDDEN_COLUMNS,
    MAX_EF_SEARCH,
    TERMS_COLUMN,
    SearchOptions,
    TableSpec,
)

# How the search function compares a filter's values with a column of each type.
COMPARED_AS = {
    "text": "text",
    "bigint": "numeric",
    "double precision": "double precision",
    "boolean": "boolean",
}


def column_types(data: pd.DataFrame) -> dict[str, str]:
    """The SQL type of each display column, from its pandas dtype."""
    types = {}
    for column in data.columns.drop(VECTOR_COLUMN):
        series = data[column]
        if pd.api.types.is_bool_dtype(series):
            types[column] = "boolean"
        elif pd.api.types.is_integer_dtype(series):
            types[column] = "bigint"
        elif pd.api.types.is_float_dtype(series):
            types[column] = "double precision"
        else:
            types[column] = "text"
    types[ID_COLUMN] = "text"
    return types


# pgvector 0.8.3 fixed parallel HNSW builds and vacuum of HNSW indexes.
MIN_PGVECTOR = (0, 8, 3)


def require_pgvector(version: str) -> None:
    """Refuse a pgvector older than :data:`MIN_PGVECTOR`, naming the server's
    (``version`` as ``pg_extension.extversion`` gives it, e.g. ``0.8.1``)."""
    numbers = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    wanted = ".".join(map(str, MIN_PGVECTOR))
    if numbers is None or tuple(int(n or 0) for n in numbers.groups()) < MIN_PGVECTOR:
        raise SearchError(
            f"pgvector {version} on this server; product-search needs >= {wanted} "
            "(parallel HNSW builds and vacuum fixes): ALTER EXTENSION vector "
            "UPDATE or upgrade the server."
        )


def check_table(conn: Connection, spec: TableSpec) -> bool:
    """Whether the table exists; refuses one of another dimension or one
    without a vector column, and a server whose pgvector is too old."""
    _, rows = q.execute(
        conn, q.TABLE_STATE, {"table": spec.qualified_name, "column": VECTOR_COLUMN}
    )
    exists, dimension, pgvector = rows[0]
    if pgvector is not None:
        require_pgvector(pgvector)
    if exists and dimension is None:
        raise SearchError(
            f"Table {spec.qualified_name} has no '{VECTOR_COLUMN}' column; it "
            "was not written by product-search."
        )
    if exists and dimension != spec.dimension:
        raise SearchError(
            f"Table {spec.qualified_name} holds vectors of dimension {dimension}, "
            f"but it is configured for {spec.dimension}. Use another table_name "
            "for a model of another dimension (or drop the table)."
        )
    return bool(exists)


def prepare(conn: Connection, spec: TableSpec) -> None:
    """The extension and schema a save needs; refuses a table it cannot replace."""
    q.execute(conn, q.CREATE_EXTENSION)
    if spec.schema:
        q.execute(conn, q.CREATE_SCHEMA.format(schema=sql.Identifier(spec.schema)))
    check_table(conn, spec)


@dataclass(frozen=True)
class Staging:
    """The names a save builds under (``token`` keeps two saves apart), and
    the live names the swap renames them to."""

    spec: TableSpec
    token: str

    @property
    def products(self) -> str:
        return f"{self.spec.table_name}__new_{self.token}"

    @property
    def lexical(self) -> str:
        return f"{self.spec.table_name}__lexical_new_{self.token}"

    @property
    def terms(self) -> str:
        return f"{self.spec.table_name}__terms_new_{self.token}"

    def index(self, kind: str) -> str:
        return f"{self.spec.table_name}__{kind}_{self.token}"

    def primary_key(self, live_table: str) -> str:
        return f"{live_table}__pkey_{self.token}"

    def renames(self, filter_columns: list[str]) -> list[tuple[str, str, str]]:
        """(TABLE or INDEX, staging name, live name) of each object a save builds."""
        spec = self.spec
        table = spec.table_name
        return [
            ("TABLE", self.products, table),
            ("INDEX", self.index("hnsw"), f"{table}_hnsw"),
            ("TABLE", self.lexical, spec.lexical_table),
            ("INDEX", self.index("gin"), f"{spec.lexical_table}_terms_gin"),
            ("TABLE", self.terms, spec.terms_table),
            *(
                ("INDEX", self.index(f"filter{i}"), f"{table}_{column}"[:63])
                for i, column in enumerate(filter_columns)
            ),
        ]


def create_staging_tables(
    conn: Connection, staging: Staging, types: dict[str, str]
) -> None:
    """The products (display columns of ``types``, then the vector), their
    lexical rows and the vocabulary, empty, under their staging names."""
    spec = staging.spec
    ids = sql.Identifier(ID_COLUMN)
    for statement in (
        q.CREATE_PRODUCTS.format(
            table=q.name(spec, staging.products),
            columns=sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
                for c, t in types.items()
            ),
            vector=sql.Identifier(VECTOR_COLUMN),
            vector_type=sql.SQL(spec.vector_type),
            dimension=sql.Literal(spec.dimension),
            pkey=sql.Identifier(staging.primary_key(spec.table_name)),
            id=ids,
        ),
        q.CREATE_LEXICAL.format(
            table=q.name(spec, staging.lexical),
            id=ids,
            terms=sql.Identifier(TERMS_COLUMN),
            bm25=sql.Identifier(BM25_COLUMN),
            pkey=sql.Identifier(staging.primary_key(spec.lexical_table)),
        ),
        q.CREATE_TERMS.format(
            table=q.name(spec, staging.terms),
            pkey=sql.Identifier(staging.primary_key(spec.terms_table)),
        ),
    ):
        q.execute(conn, statement)


def create_indexes(
    conn: Connection, staging: Staging, filter_columns: list[str]
) -> None:
    """The HNSW index of the vectors, the GIN index of the terms, a B-tree for
    each of ``filter_columns``, and the planner's statistics."""
    spec = staging.spec
    for setting in ("maintenance_work_mem", "max_parallel_maintenance_workers"):
        if spec.save_args[setting] is not None:
            q.execute(conn, q.SET_LOCAL, (setting, str(spec.save_args[setting])))
    products = q.name(spec, staging.products)
    for statement in (
        q.CREATE_HNSW.format(
            index=sql.Identifier(staging.index("hnsw")),
            table=products,
            vector=sql.Identifier(VECTOR_COLUMN),
            ops=sql.SQL(spec.vector_ops),
            m=sql.Literal(spec.index_args["m"]),
            ef_construction=sql.Literal(spec.index_args["ef_construction"]),
        ),
        q.CREATE_GIN.format(
            index=sql.Identifier(staging.index("gin")),
            table=q.name(spec, staging.lexical),
            terms=sql.Identifier(TERMS_COLUMN),
        ),
        *(
            q.CREATE_BTREE.format(
                index=sql.Identifier(staging.index(f"filter{i}")),
                table=products,
                column=sql.Identifier(column),
            )
            for i, column in enumerate(filter_columns)
        ),
        # How many products a term matches, for the planner.
        *(
            q.ANALYZE.format(table=q.name(spec, name))
            for name in (staging.products, staging.lexical, staging.terms)
        ),
    ):
        q.execute(conn, statement)


def create_versions_table(conn: Connection, spec: TableSpec) -> None:
    table = q.name(spec, spec.versions_table)
    q.execute(conn, q.CREATE_VERSIONS.format(table=table))
    q.execute(conn, q.ADD_VERSION_COLUMNS.format(table=table))


def install_function(
    conn: Connection, spec: TableSpec, index: ProductIndex, version: str
) -> None:
    """(Re)create the table's search function for the version just swapped
    in: its names, vocabulary size, filterable columns and, as the default
    fusion, the one recorded with the version."""
    driver = conn.connection.driver_connection
    types = column_types(index.products.drop(columns=MODEL_COLUMN, errors="ignore"))
    function = q.name(spec, spec.function_name)
    tables = {
        key: sql.Literal(q.name(spec, table).as_string(driver))
        for key, table in (
            ("products", spec.table_name),
            ("lexical", spec.lexical_table),
            ("vocabulary", spec.terms_table),
            ("impacts", impacts.table_name(spec)),
        )
    }
    model = (
        index.products[MODEL_COLUMN].iloc[0] if MODEL_COLUMN in index.products else None
    )
    for statement in (
        q.DROP_FUNCTION.format(function=function),
        q.SEARCH_FUNCTION.format(
            function=function,
            **tables,
            vocabulary_size=sql.Literal(index.lexical.size),
            dimension=sql.Literal(spec.dimension),
            vector_type=sql.Literal(spec.vector_type),
            max_ef_search=sql.Literal(MAX_EF_SEARCH),
            hidden=sql.Literal(list(HIDDEN_COLUMNS)),
            filter_columns=sql.Literal(
                json.dumps({c: COMPARED_AS[t] for c, t in sorted(types.items())})
            ),
            options=sql.Literal(
                SearchOptions(**(index.search_options or {})).model_dump_json()
            ),
        ),
        q.COMMENT_FUNCTION.format(
            function=function,
            comment=sql.Literal(
                f"product-search: searches {spec.qualified_name} version "
                f"{version} (model {model}); see search_function.sql."
            ),
        ),
    ):
        q.execute(conn, statement)
