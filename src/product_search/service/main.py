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

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from product_search import __version__
from product_search.search.table import FilterError, SearchError
from product_search.service.deps import Served, get_served, validation_error
from product_search.service.encoder import QueueFullError
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
    app.add_exception_handler(QueueFullError, _queue_full)
    app.add_exception_handler(FilterError, _bad_filter)
    app.add_exception_handler(SearchError, _table_unavailable)
    for module in (embed, search, health, review):
        app.include_router(module.router)
    return app


async def _queue_full(_request: Request, exc: QueueFullError) -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={"detail": str(exc)},
        headers={"Retry-After": str(exc.retry_after)},
    )


async def _bad_filter(request: Request, exc: FilterError) -> JSONResponse:
    # Answered as FastAPI answers its own validation errors: one format.
    errors = [validation_error(("filters",), str(exc))]
    return await request_validation_exception_handler(
        request, RequestValidationError(errors)
    )


async def _table_unavailable(_request: Request, exc: SearchError) -> JSONResponse:
    # Whatever keeps the table from being read keeps a search from answering.
    return JSONResponse(status_code=503, content={"detail": str(exc)})


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
