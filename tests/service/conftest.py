"""The service over the real all-MiniLM-L6-v2 and a real pgvector table."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from product_search.pipelines.deployment.nodes import embed_products
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
def make_dataset():
    yield from pg.dataset_factory(dimension=384)


@pytest.fixture
def deployed_table(make_dataset, tiny_products, base_model):
    """tiny_products, embedded by the deployment node, in a fresh table."""
    table = make_dataset()
    params = {
        "batch_size": 8,
        "display_columns": ["title", "brand", "category", "price"],
    }
    table.save(embed_products(tiny_products, base_model, params))
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
def bare_client(make_client, make_dataset) -> TestClient:
    """A client over a table that was never saved: enough to test bad input."""
    return make_client(make_dataset())
