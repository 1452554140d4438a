"""Builds the FastAPI app; its lifespan loads what it serves and releases it.

``uvicorn --factory product_search.service.main:create_app --http
product_search.service.server:UpgradeIgnoringHttpToolsProtocol`` serves the
Kedro project in the current folder (or ``SEARCH_PROJECT_PATH``), configured by
the ``SEARCH_*`` environment variables.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from product_search import __version__
from product_search.service.deps import EXCEPTION_HANDLERS, Served, get_served
from product_search.service.project import serve_project
from product_search.service.routes import embed, health, review, search
from product_search.service.settings import ServiceSettings

logger = logging.getLogger(__name__)

Loader = Callable[[ServiceSettings], AbstractContextManager[Served]]


def create_app(
    settings: ServiceSettings | None = None, *, load: Loader = serve_project
) -> FastAPI:
    """The search service. On start-up its lifespan enters ``load(settings)``
    (by default :func:`serve_project`: the model, table, reranker and fusion
    of the Kedro project at ``settings.project_path``) and serves what it
    gives until shutdown, when it leaves it. Nothing is loaded where
    ``app.dependency_overrides`` replaces :func:`get_served` (tests)."""
    settings = settings or ServiceSettings()
    if not settings.api_key and not _loopback(settings.host):
        logger.warning(
            "The service listens on %s without an API key: anyone who reaches "
            "it can search and embed. Set SEARCH_API_KEY to require one.",
            settings.host,
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if get_served in app.dependency_overrides:
            yield {}
            return
        # Loading blocks, but nothing is served until it is done.
        with load(settings) as served:
            yield {"served": served}

    app = FastAPI(
        title="product-search",
        version=__version__,
        summary="Embeddings and hybrid (BM25 + vector) product search in PostgreSQL.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    for error, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(error, handler)
    for module in (embed, search, health, review):
        app.include_router(module.router)
    return app


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
