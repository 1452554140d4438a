"""PgVectorTableDataset: the Kedro face of the search table (the table itself
is tested in tests/search/test_table.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError

from product_search.datasets import PgVectorTableDataset
from product_search.search.bm25 import Bm25Params
from product_search.search.index import build_product_index
from product_search.search.table import DatabaseUnavailableError, SearchTable
from tests import pg


@pytest.fixture
def make_dataset():
    yield from pg.dataset_factory(dimension=3)


def two_products(model: str = "model-a"):
    frame = pd.DataFrame(
        {
            "product_id": ["p1", "p2"],
            "title": ["Oak board", "Steel pipe"],
            "embedding": [np.array([1, 0, 0]), np.array([0, 1, 0])],
            "model": model,
        }
    )
    return build_product_index(frame, frame["title"].tolist(), Bm25Params())


def test_save_then_load_gives_the_search_table(make_dataset):
    dataset = make_dataset()
    assert not dataset.exists()

    dataset.save(two_products())
    table = dataset.load()

    assert dataset.exists()
    assert isinstance(table, SearchTable)
    assert table.qualified_name == dataset.table.qualified_name
    assert [h.product_id for h in table.search("pipe", [0, 1, 0], 2)] == ["p2", "p1"]
    assert table.info()["row_count"] == 2


def test_missing_table_loads_with_a_clear_error(make_dataset):
    with pytest.raises(DatasetError, match="does not exist yet; run the deployment"):
        make_dataset().load()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pd.DataFrame({"product_id": ["p1"]}), "Expected a ProductIndex"),
        ([1, 2], "Expected a ProductIndex .* got list"),
    ],
)
def test_anything_but_a_product_index_is_refused(make_dataset, data, message):
    with pytest.raises(DatasetError, match=message):
        make_dataset().save(data)


def test_errors_of_the_table_become_dataset_errors(make_dataset):
    dataset = make_dataset()
    dataset.save(two_products())
    wider = make_dataset(table_name=dataset.table.table_name, dimension=4)

    with pytest.raises(DatasetError, match=r"dimension 3, but .* configured for 4"):
        wider.load()
    with pytest.raises(DatasetError, match="several models"):
        bad = two_products()
        bad.products.loc[1, "model"] = "model-b"
        dataset.save(bad)


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


def test_a_null_connection_string_means_the_embedded_server():
    # What conf/base/credentials.yml gives when DATABASE_URL is unset.
    dataset = PgVectorTableDataset(
        table_name="product_embeddings",
        dimension=384,
        credentials={"con": None},
        embedded_data_dir="data/09_database",
    )

    assert dataset._describe()["embedded_data_dir"] == "data/09_database"


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
        dataset.table.info()
    with pytest.raises(DatasetError, match="the database is unreachable"):
        dataset.load()
