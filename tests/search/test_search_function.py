"""The table's SQL search function (search_function.sql) and its filters,
against a real PostgreSQL with pgvector."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from product_search.search.table import FilterError, SearchOptions
from tests.search.test_table import db, ids, index, rows  # noqa: F401

# A catalog of 400 products with random 8-d vectors: 4 of them (1%) in the
# category "rare", the others spread over "common" and "other"; prices 0..399.
N, RARE = 400, ["r0", "r1", "r2", "r3"]


@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(7)
    product_ids = [f"p{i:03d}" for i in range(N - len(RARE))] + RARE
    vectors = rng.normal(size=(N, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    category = ["common" if i % 2 else "other" for i in range(N - len(RARE))]
    return index(
        product_ids,
        vectors.tolist(),
        texts=[f"oak board {i}" if i % 3 else f"walnut shelf {i}" for i in range(N)],
        category=category + ["rare"] * len(RARE),
        brand=[f"brand{i % 10}" for i in range(N)],
        price=[float(i) for i in range(N)],
    )


@pytest.fixture
def make_8d():
    from tests import pg  # noqa: PLC0415

    for make in pg.dataset_factory(dimension=8):
        yield lambda **kwargs: make(**kwargs).table


def exact_dense(catalog, query, keep, k):
    """The k nearest products among those ``keep`` accepts, by brute force."""
    frame = catalog.products
    vectors = np.stack(frame["embedding"].to_numpy())
    scores = vectors @ query
    order = sorted(
        (i for i in range(len(frame)) if keep(frame.iloc[i])),
        key=lambda i: (-scores[i], frame["product_id"].iloc[i]),
    )
    return [frame["product_id"].iloc[i] for i in order[:k]]


@pytest.mark.parametrize("exact_rows", [2000, 0], ids=["exact scan", "hnsw"])
def test_a_one_percent_filter_still_returns_k_dense_hits(
    make_8d,
    catalog,
    exact_rows,
    db,  # noqa: F811
):
    # No B-tree on category: a filtered walk of the HNSW graph is the one
    # index path, which the planner must take once heap scans are off.
    table = make_8d(save_args={"filter_indexes": []})
    table.save(catalog)
    query = np.asarray(catalog.products["embedding"].iloc[0], dtype=np.float32)
    options = SearchOptions(filter_exact_rows=exact_rows)
    expected = exact_dense(catalog, query, lambda p: p["category"] == "rare", 4)

    hits = table.search(
        "", query, 4, mode="dense", options=options, filters={"category": ["rare"]}
    )

    # Every rare product, nearest first: an HNSW walk that stopped at its
    # ef_search candidates would have found about none of them.
    assert ids(hits) == expected
    assert sorted(expected) == RARE
    assert all(hit.fields["category"] == "rare" for hit in hits)
    # The same with the planner kept off the heap scan: through the HNSW
    # index, pgvector's iterative scan finds them.
    with db.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        found = conn.execute(
            text(
                f"SELECT product_id FROM {table.qualified_function}("
                "CAST(:v AS vector), NULL, 4, CAST(:f AS jsonb), 'dense', "
                "CAST(:o AS jsonb))"
            ),
            {
                "v": str(query.tolist()),
                "f": '{"category": ["rare"]}',
                "o": options.model_dump_json(),
            },
        ).scalars()
        assert list(found) == expected


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_filters_apply_inside_every_lane(make_8d, catalog, mode):
    table = make_8d()
    table.save(catalog)
    query = np.asarray(catalog.products["embedding"].iloc[5], dtype=np.float32)
    filters = {"category": ["common", "rare"], "price": {"min": 100, "max": 250.5}}

    hits = table.search("walnut shelf", query, 20, mode=mode, filters=filters)

    assert len(hits) == 20
    assert all(
        hit.fields["category"] in ("common", "rare")
        and 100 <= hit.fields["price"] <= 250.5
        for hit in hits
    )
    # Applied before the top k, not after: unfiltered, most of the 20 best
    # are products the filter drops.
    unfiltered = table.search("walnut shelf", query, 20, mode=mode)
    assert sum(100 <= h.fields["price"] <= 250.5 for h in unfiltered) < 20


def test_filters_on_brand_and_a_one_sided_range(make_8d, catalog):
    table = make_8d()
    table.save(catalog)

    hits = table.search(
        "oak board", None, 50, mode="lexical",
        filters={"brand": ["brand3", "brand7"], "price": {"max": 40}},
    )  # fmt: skip

    # brand3 and brand7 below 40: 3, 7, 13, 17, ... 37, and "oak board" is in
    # every product whose number is not a multiple of 3.
    expected = {f"p{i:03d}" for i in range(41) if i % 10 in (3, 7) and i % 3}
    assert set(ids(hits)) == expected


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (
            {"colour": ["red"]},
            "Cannot filter on colour: the table has no such column. It has brand, "
            "category, price, product_id.",
        ),
        ({"price": {"above": 3}}, "filters.price must be a non-empty list"),
        ({"category": {"min": 3}}, "filters.category must be a non-empty list of values, got"),
        ({"price": ["cheap"]}, 'invalid input syntax for type double precision: "cheap"'),
    ],
)  # fmt: skip
def test_a_filter_the_table_cannot_apply_is_refused_with_what_it_has(
    make_8d, catalog, filters, message
):
    table = make_8d()
    table.save(catalog)

    with pytest.raises(FilterError) as refused:
        table.search("oak", None, 3, mode="lexical", filters=filters)

    assert message in str(refused.value)


def test_the_function_is_installed_with_each_version_and_says_which(
    make_8d,
    catalog,
    db,  # noqa: F811
):
    table = make_8d()
    first = table.save(catalog)
    second = table.save(catalog)

    [(comment,)] = rows(
        db,
        f"SELECT obj_description('{table.qualified_function}'::regproc, 'pg_proc')",
    )
    assert comment == (
        f"product-search: searches {table.qualified_name} version {second} "
        "(model None); see search_function.sql."
    )
    assert first != second
    # Called as a SQL client calls it, with the version's own fusion.
    [(count,)] = rows(
        db,
        f"SELECT count(*) FROM {table.qualified_function}(NULL, ARRAY['walnut'], 5, "
        "search_mode => 'lexical')",
    )
    assert count == 5
