"""A Kedro dataset for the search table in PostgreSQL with pgvector: it saves a
:class:`~product_search.search.index.ProductIndex` and loads a
:class:`~product_search.search.table.SearchTable` to search it. The database
work itself is in :mod:`product_search.search.table`."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from product_search.database import get_engine
from product_search.errors import UserError
from product_search.search.index import ProductIndex
from product_search.search.table import SearchError, SearchTable, TableSpec, VectorType


class PgVectorTableDataset(AbstractDataset[ProductIndex, SearchTable]):
    """Products with their embeddings (HNSW, cosine) and BM25 weights,
    replaced atomically by each save; ``load`` returns the table, ready for
    ``search``.

    ``vector_type``: ``vector`` (4-byte floats, the default) or ``halfvec``
    (2-byte floats: half the table and HNSW index, for a small loss of
    recall, bench/results/scale.md); recorded with each version. The server's
    pgvector must be 0.8.3 or later (checked on save and load).

    The database is ``credentials["con"]`` (``conf/base/credentials.yml``
    fills ``db`` from the ``DATABASE_URL`` environment variable), else, when
    it is null or empty, an embedded PostgreSQL in ``embedded_data_dir`` (see
    :mod:`product_search.database`). The connection string never appears
    in ``str(dataset)`` or in logs.

    Example catalog entry::

        product_embeddings:
          type: product_search.datasets.PgVectorTableDataset
          table_name: product_embeddings
          dimension: 384
          vector_type: vector            # or halfvec
          index_args: {m: 16, ef_construction: 64}
          save_args: {maintenance_work_mem: 1GB}
          credentials: db

    With ``missing_ok: true`` a table that does not exist yet loads too (its
    ``info()`` is None), for a reader such as the promotion gate on a first run.
    """

    def __init__(
        self,
        *,
        table_name: str,
        dimension: int,
        schema: str | None = None,
        vector_type: VectorType = "vector",
        credentials: dict[str, Any] | None = None,
        embedded_data_dir: str = "data/09_database",
        index_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        missing_ok: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._missing_ok = missing_ok
        try:
            self._spec = TableSpec(
                table_name=table_name,
                dimension=dimension,
                schema=schema,
                vector_type=vector_type,  # checked there
                index_args=dict(index_args or {}),
                save_args=dict(save_args or {}),
            )
        except UserError as exc:
            raise DatasetError(str(exc)) from exc
        # `con: null` is what credentials.yml gives when DATABASE_URL is unset:
        # the embedded server, as with no credentials at all.
        if credentials is not None and (
            "con" not in credentials or not isinstance(credentials["con"], str | None)
        ):
            raise DatasetError(
                "'credentials' must hold a 'con' connection string, e.g. "
                "'postgresql+psycopg://user:password@host:5432/db'."
            )
        con = (credentials or {}).get("con")
        self._credentials = {"con": con} if con and con.strip() else None
        self._embedded_data_dir = embedded_data_dir
        self.metadata = metadata
        self._table: SearchTable | None = None

    @property
    def table(self) -> SearchTable:
        """The search table, its engine created (and the embedded server
        started) on first use."""
        if self._table is None:
            engine = get_engine(self._credentials, self._embedded_data_dir)
            self._table = SearchTable(engine, self._spec)
        return self._table

    def load(self) -> SearchTable:
        try:
            if not self._missing_ok and not self.table.exists():
                raise DatasetError(
                    f"Table {self.table.qualified_name} does not exist yet; run the "
                    "deployment pipeline first."
                )
        except SearchError as exc:
            raise DatasetError(str(exc)) from exc
        return self.table

    def save(self, data: ProductIndex) -> None:
        if not isinstance(data, ProductIndex):
            raise DatasetError(
                f"Expected a ProductIndex (see product_search.search.index), got "
                f"{type(data).__name__}."
            )
        try:
            self.table.save(data)
        # A bare ValueError is a bug of ours: left as it is, it keeps its traceback.
        except (SearchError, UserError) as exc:
            raise DatasetError(str(exc)) from exc

    def _exists(self) -> bool:
        return self.table.exists()

    def _release(self) -> None:
        if self._table is not None:
            self._table.engine.dispose()
            self._table = None

    def _describe(self) -> dict[str, Any]:
        return {
            "table_name": self._spec.table_name,
            "schema": self._spec.schema,
            "dimension": self._spec.dimension,
            "vector_type": self._spec.vector_type,
            "embedded_data_dir": None if self._credentials else self._embedded_data_dir,
            "index_args": self._spec.index_args,
            "save_args": self._spec.save_args,
        }
