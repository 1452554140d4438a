"""Builds the FastAPI app from an encoder, a vector table and settings."""

from __future__ import annotations

from fastapi import FastAPI

from product_search import __version__
from product_search.datasets import PgVectorTableDataset
from product_search.service.encoder import Encoder
from product_search.service.routes import embed, health, search
from product_search.service.settings import ServiceSettings


def create_app(
    encoder: Encoder,
    table: PgVectorTableDataset,
    settings: ServiceSettings | None = None,
) -> FastAPI:
    """The search service over ``encoder`` and ``table``; tests pass their own,
    ``python -m product_search.service`` passes those of the Kedro catalog."""
    app = FastAPI(
        title="product-search",
        version=__version__,
        summary="Embeddings and semantic product search over pgvector.",
    )
    app.state.encoder = encoder
    app.state.table = table
    app.state.settings = settings or ServiceSettings()
    for module in (embed, search, health):
        app.include_router(module.router)
    return app
