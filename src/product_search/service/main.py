"""Builds the FastAPI app from an encoder, a vector table and settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from product_search import __version__
from product_search.search.rerank import Reranker
from product_search.search.table import SearchOptions, SearchTable
from product_search.service.encoder import Encoder
from product_search.service.routes import embed, health, search
from product_search.service.settings import ServiceSettings


def create_app(
    encoder: Encoder,
    table: SearchTable,
    settings: ServiceSettings | None = None,
    search_options: SearchOptions | None = None,
    promotion: Callable[[], dict[str, Any] | None] | None = None,
    *,
    reranker: Reranker | None = None,
) -> FastAPI:
    """The search service over ``encoder`` and ``table``; tests pass their own,
    ``python -m product_search.service`` passes those of the Kedro catalog.
    ``search_options`` default to the settings over SearchOptions' defaults;
    ``promotion`` reads the promotion gate's last decision for /health;
    ``reranker``, when given, reorders the top hits of /search."""
    app = FastAPI(
        title="product-search",
        version=__version__,
        summary="Embeddings and hybrid (BM25 + vector) product search in PostgreSQL.",
    )
    app.state.encoder = encoder
    app.state.table = table
    app.state.settings = settings or ServiceSettings()
    app.state.search_options = search_options or app.state.settings.search_options()
    app.state.promotion = promotion or (lambda: None)
    app.state.reranker = reranker
    for module in (embed, search, health):
        app.include_router(module.router)
    return app
