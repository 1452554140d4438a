"""A Kedro dataset for a PostgreSQL table of embeddings with a pgvector HNSW index."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from kedro.io.core import AbstractDataset, DatasetError, generate_timestamp
from pgvector.psycopg import register_vector
from psycopg import sql
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from product_search.database import get_engine

logger = logging.getLogger(__name__)

ID_COLUMN = "product_id"
VECTOR_COLUMN = "embedding"
MODEL_COLUMN = "model"

# Lower case so that quoted and unquoted SQL agree; short enough to leave room
# for the suffixes of the staging table, its index and the versions table.
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")
COLUMN = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# pgvector's HNSW index takes vectors of at most 2,000 dimensions.
MAX_INDEXED_DIMENSION = 2000
HNSW_LIMITS = {"m": (2, 100), "ef_construction": (4, 1000)}
MAX_EF_SEARCH = 1000
_DB_ERRORS = (SQLAlchemyError, psycopg.Error)


def _check_identifier(kind: str, value: Any, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise DatasetError(
            f"Invalid {kind} {value!r}: use lower-case letters, digits and "
            f"underscores, starting with a letter or underscore "
            f"(pattern {pattern.pattern})."
        )
    return value


def _check_keys(kind: str, given: dict[str, Any], allowed: dict[str, Any]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise DatasetError(
            f"Unknown {kind} {unknown}; expected some of {sorted(allowed)}."
        )


class DatabaseUnavailableError(DatasetError):
    """The database could not be reached (as opposed to a bad table or query)."""


def _db_error(exc: BaseException, message: str) -> DatasetError:
    """A DatasetError with the driver's own message, without SQLAlchemy's echo
    of statement and parameters (which may hold a batch of vectors)."""
    original = getattr(exc, "orig", None) or exc
    # The server's one-line message when there is one (not the LINE/caret echo).
    diagnostic = getattr(original, "diag", None)
    detail = getattr(diagnostic, "message_primary", None) or str(original).strip()
    # Connection failures carry no SQLSTATE, or one of class 08 / 57P (server
    # shutting down or starting); disk full, lock timeouts etc. are not them.
    state = getattr(original, "sqlstate", None)
    if isinstance(original, psycopg.OperationalError) and (
        state is None or state.startswith(("08", "57P"))
    ):
        return DatabaseUnavailableError(
            f"{message}: the database is unreachable: {detail}"
        )
    if isinstance(original, psycopg.errors.UndefinedTable):
        return DatasetError(
            f"{message}: {detail}; run the deployment pipeline to create it."
        )
    return DatasetError(f"{message}: {detail}")


def _column_types(data: pd.DataFrame) -> dict[str, str]:
    """The SQL type of each non-vector column, from its pandas dtype."""
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


def _column_values(series: pd.Series, sql_type: str) -> list[Any]:
    """Python values for COPY: missing values (NaN, None, NA) become NULL."""
    if sql_type == "text":
        series = series.map(lambda value: value if pd.isna(value) else str(value))
    return series.astype(object).where(series.notna(), None).tolist()


class PgVectorTableDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """A table of ``product_id``, display columns and an ``embedding``
    ``vector(dimension)`` column with an HNSW index (``vector_cosine_ops``), in
    PostgreSQL with pgvector.

    ``save`` replaces the table atomically: the rows are copied into a staging
    table, indexed, and swapped in within one transaction, so searches see the
    old table or the new one and a failed save leaves the old one serving. Each
    save also records a version (model, dimension, row count, timings) in
    ``<table_name>_versions``; :meth:`info` returns the current one.

    The database is ``credentials["con"]``, else the ``DATABASE_URL``
    environment variable, else an embedded PostgreSQL in ``embedded_data_dir``
    (see :mod:`product_search.database`). The connection string never appears
    in ``str(dataset)`` or in logs.

    Example catalog entry::

        product_embeddings:
          type: product_search.datasets.PgVectorTableDataset
          table_name: product_embeddings
          dimension: 384
          index_args: {m: 16, ef_construction: 64}
          save_args: {maintenance_work_mem: 1GB}
          credentials: db
    """

    DEFAULT_INDEX_ARGS: dict[str, Any] = {"m": 16, "ef_construction": 64}
    # `columns`: load only these columns (all when None).
    DEFAULT_LOAD_ARGS: dict[str, Any] = {"columns": None}
    # HNSW builds are much slower once the graph outgrows maintenance_work_mem.
    DEFAULT_SAVE_ARGS: dict[str, Any] = {
        "maintenance_work_mem": "512MB",
        "max_parallel_maintenance_workers": None,
    }

    def __init__(
        self,
        *,
        table_name: str,
        dimension: int,
        schema: str | None = None,
        credentials: dict[str, Any] | None = None,
        embedded_data_dir: str = "data/09_database",
        index_args: dict[str, Any] | None = None,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._table_name = _check_identifier("table name", table_name, IDENTIFIER)
        self._schema = (
            None if schema is None else _check_identifier("schema", schema, IDENTIFIER)
        )
        if (
            isinstance(dimension, bool)
            or not isinstance(dimension, int)
            or not 1 <= dimension <= MAX_INDEXED_DIMENSION
        ):
            raise DatasetError(
                f"'dimension' must be an integer from 1 to {MAX_INDEXED_DIMENSION} "
                f"(the most an HNSW index takes), got {dimension!r}."
            )
        self._dimension = dimension
        if credentials is not None and not (
            isinstance(credentials.get("con"), str) and credentials["con"].strip()
        ):
            raise DatasetError(
                "'credentials' must hold a 'con' connection string, e.g. "
                "'postgresql+psycopg://user:password@host:5432/db'."
            )
        self._credentials = credentials
        self._embedded_data_dir = embedded_data_dir

        _check_keys("index_args", index_args or {}, self.DEFAULT_INDEX_ARGS)
        self._index_args = {**self.DEFAULT_INDEX_ARGS, **(index_args or {})}
        for key, (low, high) in HNSW_LIMITS.items():
            value = self._index_args[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise DatasetError(
                    f"index_args.{key} must be an integer, got {value!r}."
                )
            if not low <= value <= high:
                raise DatasetError(
                    f"index_args.{key} must be from {low} to {high}, got {value}."
                )
        if self._index_args["ef_construction"] < 2 * self._index_args["m"]:
            raise DatasetError(
                "index_args.ef_construction must be at least twice index_args.m "
                f"(pgvector's rule), got {self._index_args}."
            )
        _check_keys("load_args", load_args or {}, self.DEFAULT_LOAD_ARGS)
        self._load_args = {**self.DEFAULT_LOAD_ARGS, **(load_args or {})}
        _check_keys("save_args", save_args or {}, self.DEFAULT_SAVE_ARGS)
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        self.metadata = metadata
        self._engine: Engine | None = None

    # ------------------------------------------------------------ names
    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, created (and the embedded server started) on
        first use."""
        if self._engine is None:
            self._engine = get_engine(self._credentials, self._embedded_data_dir)
        return self._engine

    @property
    def dimension(self) -> int:
        return self._dimension

    def _name(self, name: str) -> sql.Composable:
        if self._schema is None:
            return sql.Identifier(name)
        return sql.Identifier(self._schema, name)

    @property
    def qualified_name(self) -> str:
        """``schema.table`` (or ``table``), for messages and ``to_regclass``
        (unquoted, which is safe: names are checked lower-case identifiers)."""
        return (
            f"{self._schema}.{self._table_name}" if self._schema else self._table_name
        )

    @property
    def _versions_table(self) -> str:
        return f"{self._table_name}_versions"

    @staticmethod
    def _execute(
        conn: Connection, query: sql.Composable, params: Any = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run a psycopg-composed statement on a SQLAlchemy connection and
        return the column names and rows (empty for statements)."""
        with conn.connection.driver_connection.cursor() as cursor:
            cursor.execute(query, params)
            if cursor.description is None:
                return [], []
            return [d.name for d in cursor.description], cursor.fetchall()

    def _check_dimension(self, conn: Connection) -> bool:
        """Whether the table exists; refuses one of another dimension or one
        without a vector column."""
        _, rows = self._execute(
            conn,
            sql.SQL(
                "SELECT to_regclass(%(t)s) IS NOT NULL, ("
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%(t)s) "
                "AND attname = %(c)s AND NOT attisdropped)"
            ),
            {"t": self.qualified_name, "c": VECTOR_COLUMN},
        )
        exists, dimension = rows[0]
        if exists and dimension is None:
            raise DatasetError(
                f"Table {self.qualified_name} has no '{VECTOR_COLUMN}' column; it "
                "was not written by this dataset."
            )
        if exists and dimension != self._dimension:
            raise DatasetError(
                f"Table {self.qualified_name} holds vectors of dimension {dimension}, "
                f"but this dataset is configured for {self._dimension}. Use another "
                "table_name for a model of another dimension (or drop the table)."
            )
        return exists

    # ------------------------------------------------------------ save
    def _validate(self, data: pd.DataFrame) -> np.ndarray:
        """Check the frame and return its embeddings as a float32 matrix."""
        if not isinstance(data, pd.DataFrame):
            raise DatasetError(
                f"Expected a pandas DataFrame, got {type(data).__name__}."
            )
        missing = [c for c in (ID_COLUMN, VECTOR_COLUMN) if c not in data.columns]
        if missing:
            raise DatasetError(
                f"The frame lacks the column(s) {missing}; it has {list(data.columns)}."
            )
        for column in data.columns:
            _check_identifier("column name", column, COLUMN)
        if data.empty:
            raise DatasetError(
                f"Refusing to replace {self.qualified_name} with an empty table."
            )
        ids = data[ID_COLUMN]
        if ids.isna().any():
            raise DatasetError(f"{int(ids.isna().sum())} row(s) have no {ID_COLUMN}.")
        duplicated = ids[ids.duplicated()].astype(str).unique().tolist()
        if duplicated:
            raise DatasetError(
                f"{len(duplicated)} {ID_COLUMN}(s) occur more than once, "
                f"e.g. {duplicated[:5]}."
            )
        if (
            MODEL_COLUMN in data.columns
            and data[MODEL_COLUMN].nunique(dropna=False) > 1
        ):
            raise DatasetError(
                f"The rows come from several models "
                f"{sorted(map(str, data[MODEL_COLUMN].unique()))}; their vectors "
                "cannot be searched together."
            )
        lengths = data[VECTOR_COLUMN].map(
            lambda v: len(v) if isinstance(v, Sequence | np.ndarray) else -1
        )
        wrong = lengths != self._dimension
        if wrong.any():
            first = data.loc[wrong].iloc[0]
            raise DatasetError(
                f"{int(wrong.sum())} embedding(s) are not vectors of length "
                f"{self._dimension}, e.g. {ID_COLUMN} {first[ID_COLUMN]!r} has "
                f"length {lengths[wrong].iloc[0]} (-1: not a vector)."
            )
        try:
            matrix = np.asarray(data[VECTOR_COLUMN].tolist(), dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"The embeddings are not numeric: {exc}") from exc
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            raise DatasetError(
                f"{int((~finite).sum())} embedding(s) hold NaN or infinite values, "
                f"e.g. {ID_COLUMN} {data[ID_COLUMN].iloc[int(np.argmin(finite))]!r}."
            )
        return matrix

    def save(self, data: pd.DataFrame) -> None:
        matrix = self._validate(data)
        token = secrets.token_hex(4)
        staging = f"{self._table_name}__new_{token}"
        version = generate_timestamp()
        try:
            with self.engine.begin() as conn:
                timings = self._build(conn, data, matrix, staging, token)
                self._swap(conn, staging, token)
                self._record_version(conn, data, version, timings)
        except _DB_ERRORS as exc:
            raise _db_error(
                exc,
                f"Could not save {len(data)} rows to {self.qualified_name} (the previous "
                "table, if any, is unchanged)",
            ) from exc
        logger.info(
            "Saved %d vectors to %s as version %s: copied in %.1f s, HNSW index "
            "built in %.1f s.",
            len(data),
            self.qualified_name,
            version,
            timings["load_seconds"],
            timings["index_seconds"],
        )

    def _build(
        self,
        conn: Connection,
        data: pd.DataFrame,
        matrix: np.ndarray,
        staging: str,
        token: str,
    ) -> dict[str, float]:
        """Create the staging table, COPY the rows in, build its index."""
        self._execute(conn, sql.SQL("CREATE EXTENSION IF NOT EXISTS vector"))
        if self._schema:
            self._execute(
                conn,
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self._schema)
                ),
            )
        self._check_dimension(conn)
        types = _column_types(data)
        columns = list(types)
        definitions = [
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
            for c, t in types.items()
        ]
        definitions.append(
            sql.SQL("{} vector({}) NOT NULL").format(
                sql.Identifier(VECTOR_COLUMN), sql.Literal(self._dimension)
            )
        )
        definitions.append(
            sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
                sql.Identifier(f"{self._table_name}__pkey_{token}"),
                sql.Identifier(ID_COLUMN),
            )
        )
        self._execute(
            conn,
            sql.SQL("CREATE TABLE {} ({})").format(
                self._name(staging), sql.SQL(", ").join(definitions)
            ),
        )

        started = time.perf_counter()
        driver = conn.connection.driver_connection
        register_vector(driver)
        values = [_column_values(data[c], types[c]) for c in columns]
        copy_types = [
            {"boolean": "bool", "bigint": "int8", "double precision": "float8"}.get(
                types[c], "text"
            )
            for c in columns
        ]
        with (
            driver.cursor() as cursor,
            cursor.copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    self._name(staging),
                    sql.SQL(", ").join(map(sql.Identifier, [*columns, VECTOR_COLUMN])),
                )
            ) as copy,
        ):
            copy.set_types([*copy_types, "vector"])
            for row in zip(*values, matrix, strict=True):
                copy.write_row(row)
        load_seconds = time.perf_counter() - started

        started = time.perf_counter()
        for setting in ("maintenance_work_mem", "max_parallel_maintenance_workers"):
            if self._save_args[setting] is not None:
                self._execute(
                    conn,
                    sql.SQL("SELECT set_config(%s, %s, true)"),
                    (setting, str(self._save_args[setting])),
                )
        self._execute(
            conn,
            sql.SQL(
                "CREATE INDEX {} ON {} USING hnsw ({} vector_cosine_ops) "
                "WITH (m = {}, ef_construction = {})"
            ).format(
                sql.Identifier(f"{self._table_name}__hnsw_{token}"),
                self._name(staging),
                sql.Identifier(VECTOR_COLUMN),
                sql.Literal(self._index_args["m"]),
                sql.Literal(self._index_args["ef_construction"]),
            ),
        )
        return {
            "load_seconds": load_seconds,
            "index_seconds": time.perf_counter() - started,
        }

    def _swap(self, conn: Connection, staging: str, token: str) -> None:
        """Replace the live table by the staging one (same transaction)."""
        table = self._table_name
        for statement in (
            sql.SQL("DROP TABLE IF EXISTS {}").format(self._name(table)),
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                self._name(staging), sql.Identifier(table)
            ),
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                self._name(f"{table}__hnsw_{token}"),
                sql.Identifier(f"{table}_hnsw"),
            ),
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                self._name(table),
                sql.Identifier(f"{table}__pkey_{token}"),
                sql.Identifier(f"{table}_pkey"),
            ),
        ):
            self._execute(conn, statement)

    def _record_version(
        self,
        conn: Connection,
        data: pd.DataFrame,
        version: str,
        timings: dict[str, float],
    ) -> None:
        self._execute(
            conn,
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "version text PRIMARY KEY, model text, dimension integer NOT NULL, "
                "row_count bigint NOT NULL, m integer NOT NULL, "
                "ef_construction integer NOT NULL, load_seconds double precision, "
                "index_seconds double precision, "
                "created_at timestamptz NOT NULL DEFAULT now())"
            ).format(self._name(self._versions_table)),
        )
        model = (
            str(data[MODEL_COLUMN].iloc[0]) if MODEL_COLUMN in data.columns else None
        )
        self._execute(
            conn,
            sql.SQL(
                "INSERT INTO {} (version, model, dimension, row_count, m, "
                "ef_construction, load_seconds, index_seconds) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self._name(self._versions_table)),
            (
                version,
                model,
                self._dimension,
                len(data),
                self._index_args["m"],
                self._index_args["ef_construction"],
                timings["load_seconds"],
                timings["index_seconds"],
            ),
        )

    # ------------------------------------------------------------ read
    def load(self) -> pd.DataFrame:
        columns = self._load_args["columns"]
        if columns is not None:
            for column in columns:
                _check_identifier("column name", column, COLUMN)
        try:
            with self.engine.connect() as conn:
                if not self._check_dimension(conn):
                    raise DatasetError(
                        f"Table {self.qualified_name} does not exist yet; run the "
                        "deployment pipeline first."
                    )
                if columns is None:
                    selected = sql.SQL("*")
                else:
                    selected = sql.SQL(", ").join(map(sql.Identifier, columns))
                register_vector(conn.connection.driver_connection)
                names, rows = self._execute(
                    conn,
                    sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                        selected,
                        self._name(self._table_name),
                        sql.Identifier(ID_COLUMN),
                    ),
                )
        except _DB_ERRORS as exc:
            raise _db_error(exc, f"Could not load {self.qualified_name}") from exc
        frame = pd.DataFrame(rows, columns=names)
        if VECTOR_COLUMN in frame.columns:
            frame[VECTOR_COLUMN] = [v.to_numpy() for v in frame[VECTOR_COLUMN]]
        return frame

    def info(self) -> dict[str, Any] | None:
        """The current version (model, dimension, row count, created_at, ...) of
        the table, or None if it has never been saved."""
        try:
            with self.engine.connect() as conn:
                if not self._check_dimension(conn):
                    return None
                names, rows = self._execute(
                    conn,
                    sql.SQL(
                        "SELECT version, model, dimension, row_count, m, "
                        "ef_construction, load_seconds, index_seconds, created_at "
                        "FROM {} ORDER BY created_at DESC, version DESC LIMIT 1"
                    ).format(self._name(self._versions_table)),
                )
        except _DB_ERRORS as exc:
            raise _db_error(
                exc, f"Could not read the version of {self.qualified_name}"
            ) from exc
        return dict(zip(names, rows[0], strict=True)) if rows else None

    def search(
        self, embedding: Sequence[float] | np.ndarray, k: int, *, ef_search: int = 100
    ) -> list[dict[str, Any]]:
        """The ``k`` rows nearest to ``embedding`` by cosine distance, through the
        HNSW index, best first; each row's columns (not its vector or model) plus
        ``score`` = cosine similarity."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DatasetError(f"k must be a positive integer, got {k!r}.")
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.shape != (self._dimension,):
            raise DatasetError(
                f"The query vector has shape {vector.shape}; expected "
                f"({self._dimension},)."
            )
        literal = "[" + ",".join(f"{x:.9g}" for x in vector.tolist()) + "]"
        query = sql.SQL(
            # Rows become JSON only after the LIMIT: a sequential scan (the
            # planner's choice on small tables) must not convert every row.
            "SELECT to_jsonb(t) - {dropped} AS fields, 1 - t.distance__ AS score "
            "FROM (SELECT *, {vector} <=> CAST(%(q)s AS vector) AS distance__ "
            "FROM {table} ORDER BY {vector} <=> CAST(%(q)s AS vector) "
            "LIMIT %(k)s) AS t ORDER BY t.distance__"
        ).format(
            dropped=sql.SQL("ARRAY[{}]::text[]").format(
                sql.SQL(", ").join(
                    map(sql.Literal, [VECTOR_COLUMN, MODEL_COLUMN, "distance__"])
                )
            ),
            vector=sql.Identifier(VECTOR_COLUMN),
            table=self._name(self._table_name),
        )
        try:
            with self.engine.begin() as conn:
                # The index scan yields at most ef_search rows.
                self._execute(
                    conn,
                    sql.SQL("SELECT set_config('hnsw.ef_search', %s, true)"),
                    (str(min(max(ef_search, k), MAX_EF_SEARCH)),),
                )
                _, rows = self._execute(conn, query, {"q": literal, "k": k})
        except _DB_ERRORS as exc:
            raise _db_error(exc, f"Could not search {self.qualified_name}") from exc
        return [{**fields, "score": float(score)} for fields, score in rows]

    def _exists(self) -> bool:
        with self.engine.connect() as conn:
            return self._check_dimension(conn)

    def _release(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _describe(self) -> dict[str, Any]:
        return {
            "table_name": self._table_name,
            "schema": self._schema,
            "dimension": self._dimension,
            "embedded_data_dir": None if self._credentials else self._embedded_data_dir,
            "index_args": self._index_args,
            "load_args": self._load_args,
            "save_args": self._save_args,
        }
