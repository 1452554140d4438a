"""Bounded BM25 (SearchOptions.lexical_bound): the impacts table a save
writes, exact results below the bound, and capped candidates above it."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from product_search.search.analyzer import analyze
from product_search.search.bm25 import score
from product_search.search.table import SearchOptions
from tests.conftest import ROOT
from tests.search.test_table import _plan, db, ids, index, rows  # noqa: F401

# 60 products: "drill" in every one (the common word), "bit" in every third,
# and 0 to 6 filler words w0.. w5, so that lengths, and with them the
# weights of "drill", differ. Category "a" for every fourth product.
N = 60
TEXTS = [
    " ".join(["drill", *(f"w{j}" for j in range(i % 7)), *(["bit"] * (i % 3 == 0))])
    for i in range(N)
]
EXACT = SearchOptions(lexical_bound=0)


@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(N, 3))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return index(
        [f"p{i:02d}" for i in range(N)],
        vectors.tolist(),
        texts=TEXTS,
        category=["a" if i % 4 == 0 else "b" for i in range(N)],
    )


@pytest.fixture
def table(catalog):
    from tests import pg  # noqa: PLC0415

    for make in pg.dataset_factory(dimension=3):
        made = make().table
        made.save(catalog)
        yield made


def top_by_weight(catalog, term: str, bound: int, keep=None) -> list[str]:
    """The ``bound`` products of highest weight for ``term`` (ties by id) among
    those ``keep`` accepts: the candidates the impacts index yields."""
    term_id = catalog.lexical.term_ids[term]
    frame = catalog.products
    holders = [
        (-np.float32(weights[term_id]), frame["product_id"].iloc[row])
        for row, weights in enumerate(catalog.lexical.weights)
        if term_id in weights and (keep is None or keep(frame.iloc[row]))
    ]
    return [product_id for _, product_id in sorted(holders)[:bound]]


def lexical(table, query: str, options: SearchOptions, **kwargs):
    return [
        (hit.product_id, hit.score)
        for hit in table.search(
            query, None, 100, mode="lexical", options=options, **kwargs
        )
    ]


def test_a_save_writes_every_posting_by_impact(db, table, catalog):  # noqa: F811
    name = table.qualified_name

    postings = rows(db, f"SELECT term_id, weight, product_id FROM {name}_impacts")

    assert len(postings) == sum(len(w) for w in catalog.lexical.weights)
    row_of = {p: i for i, p in enumerate(catalog.products["product_id"])}
    assert all(
        weight
        == pytest.approx(catalog.lexical.weights[row_of[product]][term], rel=1e-6)
        for term, weight, product in postings
    )
    [(definition,)] = rows(
        db, f"SELECT indexdef FROM pg_indexes WHERE indexname = '{name}_impacts_top'"
    )
    assert "(term_id, weight DESC, product_id)" in definition
    # A term's best postings are read from the index alone.
    plan = _plan(
        db,
        f"{name}_impacts",
        "WHERE term_id = 1 ORDER BY weight DESC, product_id LIMIT 5",
    )
    assert f"Index Only Scan using {table.table_name}_impacts_top" in plan


@pytest.mark.parametrize(
    "query", ["drill bit", "bit w3", "w5 bit w0", "drill drill w1"]
)
@pytest.mark.parametrize("bound", [N, 10_000])
def test_below_the_bound_results_equal_exact_bm25(table, catalog, query, bound):
    # Every query term is held by at most N products: no term is cut.
    bounded = lexical(table, query, SearchOptions(lexical_bound=bound))

    exact = lexical(table, query, EXACT)

    assert bounded == exact
    # Both are the Python sum over every product holding a term.
    expected = score(catalog.lexical, analyze(query))
    assert len(exact) == len(expected)
    assert {int(p[1:]): s for p, s in exact} == pytest.approx(expected, rel=1e-6)


def test_a_tiny_bound_caps_each_terms_candidates(table, catalog):
    capped = lexical(table, "drill", SearchOptions(lexical_bound=5))
    both = lexical(table, "drill bit", SearchOptions(lexical_bound=5))

    # 60 products hold "drill"; the lane scores its 5 of highest weight.
    assert len(lexical(table, "drill", EXACT)) == N
    assert [p for p, _ in capped] == top_by_weight(catalog, "drill", 5)
    # Two terms: the union of each one's 5 best, scored with both terms.
    union = set(top_by_weight(catalog, "drill", 5) + top_by_weight(catalog, "bit", 5))
    assert {p for p, _ in both} == union
    exact = dict(lexical(table, "drill bit", EXACT))
    assert all(s == exact[p] for p, s in both)


def test_a_term_below_the_bound_brings_in_all_its_products(table, catalog):
    # 20 products hold "bit": all of them, and the 20 best of "drill".
    hits = lexical(table, "drill bit", SearchOptions(lexical_bound=20))

    holders = set(top_by_weight(catalog, "bit", N))
    assert len(holders) == 20
    assert {p for p, _ in hits} == holders | set(top_by_weight(catalog, "drill", 20))
    exact = dict(lexical(table, "drill bit", EXACT))
    assert all(s == exact[p] for p, s in hits)


def test_the_bound_counts_only_the_products_the_filters_keep(table, catalog):
    options = SearchOptions(lexical_bound=3)

    hits = table.search(
        "drill", None, 100, mode="lexical", options=options, filters={"category": ["a"]}
    )

    # 15 products of category "a" hold "drill": the 3 best of them, not the
    # few of the overall best 3 that happen to be in "a".
    assert ids(hits) == top_by_weight(
        catalog, "drill", 3, keep=lambda p: p["category"] == "a"
    )
    assert all(hit.fields["category"] == "a" for hit in hits)


@pytest.mark.parametrize("mode", ["hybrid", "lexical"])
def test_none_is_exact_as_zero_is(table, mode):
    vector = [1.0, 0.0, 0.0]

    unset = table.search(
        "drill w2", vector, 100, mode=mode, options=SearchOptions(lexical_bound=None)
    )

    assert unset == table.search("drill w2", vector, 100, mode=mode, options=EXACT)


def test_the_bound_is_a_search_option_of_the_project_and_the_service(monkeypatch):
    from product_search.service.settings import ServiceSettings  # noqa: PLC0415

    with open(ROOT / "conf" / "base" / "parameters_search.yml") as f:
        project = yaml.safe_load(f)["search"]["options"]
    monkeypatch.setenv("SEARCH_LEXICAL_BOUND", "5000")

    served = ServiceSettings().search_options(project)

    # Exact BM25 unless an environment bounds it (conf/prod for 1M products).
    assert project["lexical_bound"] == SearchOptions().lexical_bound == 0
    # SEARCH_LEXICAL_BOUND serves its bound whatever the project says.
    assert served.lexical_bound == 5000


# Above the bound the candidates are ranked by the weights read and only the
# best RESCORED scored exactly. 1,000 products "drill" and 990 "bit" (one word
# each) outrank, by the weights read, the 10 "drill bit": "drill" is held by
# 1,010 products, so a bound of 1,000 keeps the one-word ones and leaves out the
# two-word ones, which then bring in only their "bit" weight, the lowest read.
RESCORED = 1000
CUT_TEXTS = (
    ["drill bit"] * 10 + ["drill"] * 1000 + ["bit"] * 990
    + [f"other w{i % 5}" for i in range(1000)]
)  # fmt: skip


@pytest.fixture(scope="module")
def cut_table():
    from tests import pg  # noqa: PLC0415

    catalog = index(
        [f"q{i:04d}" for i in range(len(CUT_TEXTS))],
        [[1.0, 0.0, 0.0]] * len(CUT_TEXTS),
        texts=CUT_TEXTS,
    )
    for make in pg.dataset_factory(dimension=3):
        made = make().table
        made.save(catalog)
        yield catalog, made


def test_only_the_best_candidates_by_the_weights_read_are_scored(cut_table):
    catalog, table = cut_table
    k = 10
    weights = catalog.lexical.weights
    row_of = {p: i for i, p in enumerate(catalog.products["product_id"])}
    read: dict[str, float] = {}
    for term in ("drill", "bit"):
        term_id = catalog.lexical.term_ids[term]
        for product in top_by_weight(catalog, term, 1000):
            read[product] = read.get(product, 0.0) + float(
                weights[row_of[product]][term_id]
            )
    exact = {
        catalog.products["product_id"].iloc[row]: s
        for row, s in score(catalog.lexical, analyze("drill bit")).items()
    }
    kept = sorted(read, key=lambda p: (-read[p], p))[: max(RESCORED, 10 * k)]
    expected = sorted(kept, key=lambda p: (-exact[p], p))[:k]

    hits = table.search(
        "drill bit", None, k, mode="lexical", options=SearchOptions(lexical_bound=1000)
    )

    assert ids(hits) == expected
    assert [h.score for h in hits] == pytest.approx([exact[p] for p in expected])
    # What the cut costs: exact BM25's top 10 are the "drill bit" products,
    # which the weights read ranked last.
    best = ids(table.search("drill bit", None, k, mode="lexical", options=EXACT))
    assert best == [f"q{i:04d}" for i in range(10)]
    assert not set(best) & set(expected)
