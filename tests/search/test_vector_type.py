"""The embedding column's type (``vector`` or ``halfvec``) and the pgvector
version a search table needs, against the embedded PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError
from psycopg import sql
from sqlalchemy import text

from product_search.errors import UserError
from product_search.search.bm25 import Bm25Params
from product_search.search.index import build_product_index
from product_search.search.table import SearchOptions, TableSpec
from product_search.search.table import sql as q
from product_search.search.table.errors import SearchError
from product_search.search.table.schema import require_pgvector
from tests import pg

DIMENSION = 64
PRODUCTS = 400
QUERIES = 30
K = 10
WORDS = ["drill", "saw", "lamp", "paint", "hose"]


@pytest.fixture
def make_dataset():
    yield from pg.dataset_factory(dimension=DIMENSION)


@pytest.fixture(scope="module")
def catalog():
    """Random unit vectors (the hard case for HNSW), a word and a category
    each, and queries from the same distribution."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((PRODUCTS + QUERIES, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i:03d}" for i in range(PRODUCTS)]
    frame = pd.DataFrame(
        {
            "product_id": ids,
            "category": ["rare" if i % 20 == 0 else "common" for i in range(PRODUCTS)],
            "embedding": list(vectors[:PRODUCTS]),
        }
    )
    texts = [f"{WORDS[i % len(WORDS)]} number {i}" for i in range(PRODUCTS)]
    return build_product_index(frame, texts, Bm25Params()), vectors[PRODUCTS:]


def top_ids(table, query, mode="dense", **kwargs) -> list[str]:
    return [h.product_id for h in table.search("drill", query, K, mode=mode, **kwargs)]


def test_invalid_vector_type_is_refused(make_dataset):
    with pytest.raises(UserError, match=r"'vector_type' must be one of \['halfvec'"):
        TableSpec(table_name="t", dimension=3, vector_type="float16")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="got 'bit'"):
        make_dataset(vector_type="bit")


def test_halfvec_table_searches_like_a_vector_table(make_dataset, catalog):
    index, queries = catalog
    tables = {}
    for vector_type in ("vector", "halfvec"):
        dataset = make_dataset(vector_type=vector_type)
        dataset.save(index)
        tables[vector_type] = dataset.load()
    half = tables["halfvec"]
    info = half.info()
    assert info["vector_type"] == "halfvec"
    assert tables["vector"].info()["vector_type"] == "vector"
    with half.engine.connect() as conn:
        column, index_def = conn.execute(
            text(
                "SELECT format_type(atttypid, atttypmod), (SELECT indexdef FROM "
                "pg_indexes WHERE indexname = :i) FROM pg_attribute "
                "WHERE attrelid = to_regclass(:t) AND attname = 'embedding'"
            ),
            {"t": half.table_name, "i": f"{half.table_name}_hnsw"},
        ).one()
    assert column == f"halfvec({DIMENSION})"
    assert "halfvec_cosine_ops" in index_def

    # Dense top 10 of the two tables: measured 1.0 of their hits in common on
    # these 400 random 64-d vectors (each also 1.0 against exact search);
    # 2-byte floats could swap near-ties, hence the margin.
    overlap = np.mean(
        [
            len(set(top_ids(half, v)) & set(top_ids(tables["vector"], v))) / K
            for v in queries
        ]
    )
    assert overlap >= 0.9, overlap
    for mode in ("hybrid", "lexical"):
        assert len(top_ids(half, queries[0], mode)) == K
    # "rare": 20 products; an exact ranking and pgvector's iterative scan.
    for exact_rows in (10**6, 0):
        hits = half.search(
            "drill", queries[0], K, mode="dense",
            options=SearchOptions(filter_exact_rows=exact_rows),
            filters={"category": ["rare"]},
        )  # fmt: skip
        assert len(hits) == K
        assert {h.fields["category"] for h in hits} == {"rare"}
    hybrid = half.search(
        "drill", queries[0], K, filters={"category": ["rare"]}, mode="hybrid"
    )
    assert len(hybrid) == K


def test_versions_of_an_older_release_read_as_vector(make_dataset, catalog):
    index, _ = catalog
    dataset = make_dataset()
    dataset.save(index)
    table = dataset.load()
    with table.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table.table_name}_versions DROP vector_type"))
    assert table.info()["vector_type"] == "vector"
    dataset.save(index)  # and a later save adds the column back
    assert table.info()["vector_type"] == "vector"


@pytest.mark.parametrize("version", ["0.8.3", "0.8.6", "0.9.0", "0.10.0", "1.0"])
def test_recent_pgvector_is_accepted(version):
    require_pgvector(version)


@pytest.mark.parametrize("version", ["0.8.1", "0.7.4", "0.5", "unknown"])
def test_old_pgvector_is_refused_by_name(version):
    with pytest.raises(SearchError) as refused:
        require_pgvector(version)
    assert str(refused.value).startswith(
        f"pgvector {version} on this server; product-search needs >= 0.8.3 "
        "(parallel HNSW builds and vacuum fixes): ALTER EXTENSION vector UPDATE"
    )


def test_save_and_load_check_the_servers_pgvector(make_dataset, catalog, monkeypatch):
    index, _ = catalog
    dataset = make_dataset()
    dataset.save(index)  # the embedded server's pgvector (0.8.6) passes
    assert dataset.load().exists()
    old_server = sql.SQL(
        "SELECT to_regclass(%(table)s) IS NOT NULL, (SELECT atttypmod FROM "
        "pg_attribute WHERE attrelid = to_regclass(%(table)s) AND attname = "
        "%(column)s), '0.8.1'"
    )
    monkeypatch.setattr(q, "TABLE_STATE", old_server)
    for action in (dataset.load, lambda: dataset.save(index)):
        with pytest.raises(DatasetError, match="pgvector 0.8.1 on this server"):
            action()
