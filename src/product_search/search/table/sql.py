"""The SQL of the search table, as psycopg templates: ``{name}`` is filled in
with an identifier or a literal by :meth:`psycopg.sql.SQL.format`, ``%s`` and
``%(name)s`` are the statement's parameters. The search itself is the function
in ``search_function.sql``, installed with each version of the table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from psycopg import sql
from sqlalchemy import Connection

from product_search.search.table.types import TableSpec

SEARCH_FUNCTION = sql.SQL(
    (resources.files("product_search.search.table") / "search_function.sql")
    .read_text(encoding="utf-8")
)  # fmt: skip
# Dropped before each install, because CREATE OR REPLACE refuses a function
# whose parameter names, defaults or result columns changed.
DROP_FUNCTION = sql.SQL(
    "DROP FUNCTION IF EXISTS {function}(vector, text[], integer, jsonb, text, jsonb)"
)
COMMENT_FUNCTION = sql.SQL("COMMENT ON FUNCTION {function} IS {comment}")
CALL_SEARCH = sql.SQL(
    "SELECT * FROM {function}(%s, CAST(%s AS text[]), %s, %s, %s, %s)"
)

# Whether the table exists, the dimension of its vector column (NULL when it
# has none), and pgvector's version (NULL when the extension is not created).
TABLE_STATE = sql.SQL(
    "SELECT to_regclass(%(table)s) IS NOT NULL, (SELECT atttypmod FROM pg_attribute "
    "WHERE attrelid = to_regclass(%(table)s) AND attname = %(column)s "
    "AND NOT attisdropped), "
    "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
)
CREATE_EXTENSION = sql.SQL("CREATE EXTENSION IF NOT EXISTS vector")
CREATE_SCHEMA = sql.SQL("CREATE SCHEMA IF NOT EXISTS {schema}")
CREATE_PRODUCTS = sql.SQL(
    "CREATE TABLE {table} ({columns}, {vector} {vector_type}({dimension}) NOT NULL, "
    "CONSTRAINT {pkey} PRIMARY KEY ({id}))"
)
CREATE_LEXICAL = sql.SQL(
    "CREATE TABLE {table} ({id} text NOT NULL, {terms} text[] NOT NULL, "
    "{bm25} sparsevec NOT NULL, CONSTRAINT {pkey} PRIMARY KEY ({id}))"
)
CREATE_TERMS = sql.SQL(
    "CREATE TABLE {table} (term text NOT NULL, term_id integer NOT NULL, "
    "document_frequency integer NOT NULL, CONSTRAINT {pkey} PRIMARY KEY (term))"
)
CREATE_VERSIONS = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {table} ("
    "version text PRIMARY KEY, model text, dimension integer NOT NULL, "
    "row_count bigint NOT NULL, m integer NOT NULL, ef_construction integer NOT NULL, "
    "load_seconds double precision, index_seconds double precision, "
    "analyzer text, bm25_k1 double precision, bm25_b double precision, "
    "vocabulary_size integer, average_length double precision, "
    "search_options jsonb, reranker jsonb, "
    "created_at timestamptz NOT NULL DEFAULT now(), vector_type text)"
)
# A versions table of an older release lacks the later columns (NULL there:
# an older version's vectors are ``vector``).
ADD_VERSION_COLUMNS = sql.SQL(
    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS vector_type text"
)
# A setting for the rest of the transaction only.
SET_LOCAL = sql.SQL("SELECT set_config(%s, %s, true)")
CREATE_HNSW = sql.SQL(
    "CREATE INDEX {index} ON {table} USING hnsw ({vector} {ops}) "
    "WITH (m = {m}, ef_construction = {ef_construction})"
)
CREATE_GIN = sql.SQL("CREATE INDEX {index} ON {table} USING gin ({terms})")
CREATE_BTREE = sql.SQL("CREATE INDEX {index} ON {table} ({column})")
ANALYZE = sql.SQL("ANALYZE {table}")

COPY_BINARY = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)")
DROP_TABLE = sql.SQL("DROP TABLE IF EXISTS {table}")
RENAME = sql.SQL("ALTER {kind} {old} RENAME TO {new}")
RENAME_CONSTRAINT = sql.SQL("ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}")
INSERT = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values})")

LATEST_VERSION = sql.SQL(
    "SELECT * FROM {table} ORDER BY created_at DESC, version DESC LIMIT 1"
)
SELECT_ROWS = sql.SQL(
    "SELECT {columns} FROM {table} JOIN {lexical} USING ({id}) ORDER BY {id}"
)


def name(spec: TableSpec, table: str) -> sql.Identifier:
    """``table`` in the spec's schema, quoted."""
    if spec.schema is None:
        return sql.Identifier(table)
    return sql.Identifier(spec.schema, table)


def columns(names: list[str]) -> sql.Composed:
    """``"a", "b", ...``: a list of quoted column names."""
    return sql.SQL(", ").join(map(sql.Identifier, names))


def execute(
    conn: Connection, query: sql.Composable, params: Any = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a psycopg-composed statement on a SQLAlchemy connection and return
    the column names and rows (empty for statements)."""
    with conn.connection.driver_connection.cursor() as cursor:
        cursor.execute(query, params)
        if cursor.description is None:
            return [], []
        return [d.name for d in cursor.description], cursor.fetchall()


def copy_rows(
    conn: Connection,
    table: sql.Composable,
    names: list[str],
    types: list[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """COPY ``rows`` (values of the columns ``names``, of the COPY ``types``)
    into ``table`` in binary form (the fastest way in)."""
    driver = conn.connection.driver_connection
    statement = COPY_BINARY.format(table=table, columns=columns(names))
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
