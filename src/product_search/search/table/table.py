"""The search table as the service and the evaluation use it: search it,
read its current version and rows, and save a new version (the write itself is
:mod:`product_search.search.table.writer`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import Engine

from product_search.errors import UserError
from product_search.search.analyzer import analyze
from product_search.search.index import ID_COLUMN, VECTOR_COLUMN, ProductIndex
from product_search.search.table import sql as q
from product_search.search.table import writer
from product_search.search.table.errors import (
    DB_ERRORS,
    REFUSED_ARGUMENTS,
    FilterError,
    SearchError,
    TableMissingError,
    db_error,
)
from product_search.search.table.schema import check_table
from product_search.search.table.types import (
    BM25_COLUMN,
    COLUMN,
    MODES,
    Hit,
    Mode,
    SearchOptions,
    TableSpec,
    check_identifier,
)


class SearchTable:
    """A search table on a SQLAlchemy engine whose connections have pgvector's
    types registered (:func:`product_search.database.get_engine` does that)."""

    def __init__(self, engine: Engine, spec: TableSpec) -> None:
        self.engine = engine
        self.spec = spec
        self.table_name = spec.table_name
        self.dimension = spec.dimension

    @property
    def qualified_name(self) -> str:
        return self.spec.qualified_name

    @property
    def qualified_function(self) -> str:
        """The SQL function that searches the table (``search_function.sql``)."""
        return self.spec.qualified_function

    def exists(self) -> bool:
        try:
            with self.engine.connect() as conn:
                return check_table(conn, self.spec)
        except DB_ERRORS as exc:
            raise db_error(exc, f"Could not look for {self.qualified_name}") from exc

    def save(self, index: ProductIndex) -> str:
        """Replace the table and its vocabulary atomically; returns the version."""
        return writer.save(self.engine, self.spec, index)

    def info(self) -> dict[str, Any] | None:
        """The current version (model, dimension, vector_type, row count,
        HNSW m and ef_construction, analyser, BM25
        parameters, search_options, created_at, ...), or None if it has never
        been saved."""
        try:
            with self.engine.connect() as conn:
                if not check_table(conn, self.spec):
                    return None
                names, rows = q.execute(
                    conn,
                    q.LATEST_VERSION.format(
                        table=q.name(self.spec, self.spec.versions_table)
                    ),
                )
        except DB_ERRORS as exc:
            raise db_error(
                exc, f"Could not read the version of {self.qualified_name}"
            ) from exc
        if not rows:
            return None
        info = dict(zip(names, rows[0], strict=True))
        # Versions saved before vector_type was recorded all hold ``vector``.
        info["vector_type"] = info.get("vector_type") or "vector"
        return info

    def frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows (all columns, the lexical ones included, or ``columns``)
        ordered by product id; the embeddings as numpy arrays, the BM25 weights
        as ``{term id: weight}``."""
        for column in columns or []:
            check_identifier("column name", column, COLUMN)
        try:
            with self.engine.connect() as conn:
                if not check_table(conn, self.spec):
                    raise TableMissingError(
                        f"Table {self.qualified_name} does not exist yet; run the "
                        "deployment pipeline first."
                    )
                names, rows = q.execute(
                    conn,
                    q.SELECT_ROWS.format(
                        columns=sql.SQL("*") if columns is None else q.columns(columns),
                        table=q.name(self.spec, self.table_name),
                        lexical=q.name(self.spec, self.spec.lexical_table),
                        id=sql.Identifier(ID_COLUMN),
                    ),
                )
        except DB_ERRORS as exc:
            raise db_error(exc, f"Could not load {self.qualified_name}") from exc
        frame = pd.DataFrame(rows, columns=names)
        if VECTOR_COLUMN in frame.columns:
            frame[VECTOR_COLUMN] = [v.to_numpy() for v in frame[VECTOR_COLUMN]]
        if BM25_COLUMN in frame.columns:
            frame[BM25_COLUMN] = [
                dict(zip(v.indices(), v.values(), strict=True))
                for v in frame[BM25_COLUMN]
            ]
        return frame

    def search(
        self,
        query: str,
        vector: Sequence[float] | np.ndarray | None,
        k: int,
        *,
        mode: Mode = "hybrid",
        options: SearchOptions | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``k`` best products for ``query``, best first, through the
        table's SQL function (``search_function.sql``), the one a SQL client
        calls too.

        ``dense``: nearest ``vector`` by cosine (HNSW); ``lexical``: BM25 of the
        analysed query, over the products holding any of its terms (empty when
        none does); ``hybrid``: both lanes fused, so a query without a lexical
        match still gets its dense results. ``vector`` (the query's unit
        embedding) may be None in lexical mode. ``filters`` (``{column: [values]
        or {"min": x, "max": y}}``) keep only matching products, inside both
        lanes; a filter the table cannot apply raises :class:`FilterError`.
        """
        options = options or SearchOptions()
        if mode not in MODES:
            raise UserError(f"mode must be one of {MODES}, got {mode!r}.")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(f"k must be a positive integer, got {k!r}.")
        array = None
        if mode != "lexical":
            if vector is None:
                raise UserError(f"{mode} search needs the query's vector.")
            array = np.asarray(vector, dtype=np.float32)
            # The model and the table do not match: the table cannot serve
            # this query, as when it is missing (the service answers 503).
            if array.shape != (self.dimension,):
                raise SearchError(
                    f"The query vector has shape {array.shape}; table "
                    f"{self.qualified_name} holds ({self.dimension},) vectors."
                )
        statement = q.CALL_SEARCH.format(
            function=q.name(self.spec, self.spec.function_name)
        )
        params = (
            array,
            analyze(query) if mode != "dense" else None,
            k,
            Jsonb(dict(filters or {})),
            mode,
            Jsonb(options.model_dump()),
        )
        try:
            with self.engine.begin() as conn:
                _, rows = q.execute(conn, statement, params)
        except DB_ERRORS as exc:
            original = getattr(exc, "orig", None) or exc
            if isinstance(original, REFUSED_ARGUMENTS):
                raise FilterError(original.diag.message_primary) from exc
            raise db_error(exc, f"Could not search {self.qualified_name}") from exc
        return [Hit(*row) for row in rows]
