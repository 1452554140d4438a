"""The service over the real all-MiniLM-L6-v2 and a real pgvector table."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from product_search.pipelines.deployment.nodes import index_products
from product_search.service import create_app
from product_search.service.encoder import Encoder
from product_search.service.settings import ServiceSettings
from tests import pg

# Small limits, so that the tests can cross them cheaply.
LIMITS = {"max_texts": 4, "max_text_chars": 60, "max_k": 5, "default_k": 2}


@pytest.fixture(scope="session")
def encoder(base_model) -> Encoder:
    return Encoder(base_model)


@pytest.fixture
def make_table():
    """SearchTables on fresh table names."""
    for make in pg.dataset_factory(dimension=384):
        yield lambda **kwargs: make(**kwargs).table


@pytest.fixture
def product_index(tiny_products, base_model):
    """tiny_products, embedded and analysed by the deployment node."""
    params = {
        "batch_size": 8,
        "display_columns": ["title", "brand", "category", "price"],
    }
    return index_products(
        tiny_products, base_model, params, {"bm25": {"k1": 1.2, "b": 0.75}}
    )


@pytest.fixture
def deployed_table(make_table, product_index):
    """tiny_products in a fresh search table."""
    table = make_table()
    table.save(product_index)
    return table


@pytest.fixture
def make_client(encoder):
    clients = []

    def make(table) -> TestClient:
        app = create_app(encoder, table, ServiceSettings(**LIMITS))
        clients.append(TestClient(app).__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client, deployed_table) -> TestClient:
    return make_client(deployed_table)


@pytest.fixture
def bare_client(make_client, make_table) -> TestClient:
    """A client over a table that was never saved: enough to test bad input."""
    return make_client(make_table())
