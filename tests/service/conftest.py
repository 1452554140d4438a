"""The service over the real all-MiniLM-L6-v2 and a real pgvector table."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from product_search.search.indexing import index_products
from product_search.service import create_app
from product_search.service.deps import Served, get_served
from product_search.service.encoder import Encoder, TorchBackend
from product_search.service.settings import ServiceSettings
from tests import pg

# Small limits, so that the tests can cross them cheaply.
LIMITS = {"max_texts": 4, "max_text_chars": 60, "max_k": 5, "default_k": 2}


def serving(served: Served, settings: ServiceSettings | None = None) -> FastAPI:
    """The app serving ``served`` in place of the Kedro project's model and table."""
    app = create_app(settings or ServiceSettings(**LIMITS))
    app.dependency_overrides[get_served] = lambda: served
    return app


@pytest.fixture(scope="session")
def torch_backend(base_model) -> TorchBackend:
    return TorchBackend(base_model, batch_size=64)


@pytest.fixture(scope="session")
def encoder(torch_backend) -> Encoder:
    return Encoder(torch_backend)


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
        clients.append(TestClient(serving(Served(encoder, table))).__enter__())
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


async def queued(encoder: Encoder, texts: list[str]) -> asyncio.Task[np.ndarray]:
    """A request to ``encoder``, waiting in its queue when this returns."""
    task = asyncio.ensure_future(encoder.aencode(texts))
    await asyncio.sleep(0)
    return task


class Recording:
    """The real backend, keeping the texts of each encode call."""

    def __init__(self, backend: TorchBackend) -> None:
        self.backend = backend
        self.name, self.model_id = backend.name, backend.model_id
        self.dimension = backend.dimension
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.backend.encode(texts)


class Gated(Recording):
    """Holds each encode until ``gate`` opens; ``started`` says one began, so
    that a test knows the batcher is busy."""

    def __init__(self, backend: TorchBackend) -> None:
        super().__init__(backend)
        self.started, self.gate = threading.Event(), threading.Event()

    def encode(self, texts: list[str]) -> np.ndarray:
        self.started.set()
        if not self.gate.wait(timeout=60):
            raise TimeoutError("The test never opened the gate.")
        return super().encode(texts)
