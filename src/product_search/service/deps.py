"""Dependencies of the routes: what the service serves, the settings, the
checks of requests against the settings, and the answers to the errors a
route may raise."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from product_search.search.rerank import Reranker
from product_search.search.table import (
    FilterError,
    SearchError,
    SearchOptions,
    SearchTable,
)
from product_search.service.encoder import Encoder, QueueFullError
from product_search.service.schemas import ErrorResponse
from product_search.service.settings import ServiceSettings


@dataclass(frozen=True)
class Served:
    """What the routes serve: the app's lifespan loads it from the Kedro
    project; tests give their own with ``app.dependency_overrides[get_served]``.

    ``promotion`` reads the promotion gate's last decision for /health;
    ``reranker``, when given, reorders the top hits of /search;
    ``reranker_reason`` says why there is none. ``fallbacks`` are what it
    serves in place of what the project asked for, each with its reason (see
    :mod:`product_search.service.fallbacks`): /health reports them, degraded.

    The review page (``GET /``) compares, where given: ``base_encoder`` over
    ``base_table`` (the base model and its vectors, the evaluation's
    ``evaluation_base`` table) beside the served model, and grades the hits
    of a query found in ``judgments`` (``{normalised query: {product_id:
    relevance}}``, see :func:`product_search.text.normalise_query`).
    """

    encoder: Encoder
    table: SearchTable
    search_options: SearchOptions = field(default_factory=SearchOptions)
    reranker: Reranker | None = None
    reranker_reason: str | None = None
    promotion: Callable[[], dict[str, Any] | None] = lambda: None
    base_encoder: Encoder | None = None
    base_table: SearchTable | None = None
    judgments: Mapping[str, Mapping[str, int]] | None = None
    fallbacks: tuple[str, ...] = ()


# Dependencies are coroutines: FastAPI runs a plain function in its thread
# pool, a hop that cost more than the rest of an /embed request together.
async def get_served(request: Request) -> Served:
    return request.state.served


ServedDep = Annotated[Served, Depends(get_served)]


async def get_encoder(served: ServedDep) -> Encoder:
    return served.encoder


async def get_table(served: ServedDep) -> SearchTable:
    return served.table


async def get_search_options(served: ServedDep) -> SearchOptions:
    return served.search_options


async def get_reranker(served: ServedDep) -> Reranker | None:
    return served.reranker


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


EncoderDep = Annotated[Encoder, Depends(get_encoder)]
TableDep = Annotated[SearchTable, Depends(get_table)]
SearchOptionsDep = Annotated[SearchOptions, Depends(get_search_options)]
SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
RerankerDep = Annotated[Reranker | None, Depends(get_reranker)]

_bearer = HTTPBearer(
    auto_error=False,
    description="SEARCH_API_KEY, where the service is configured with one.",
)


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse (401) a request without one of the configured keys; nothing to
    check when the service has none."""
    if not settings.api_key:
        return
    given = (credentials.credentials if credentials else "").encode()
    matched = False
    # Every key is compared, each in constant time, so that the time taken
    # tells nothing about which key or how much of it matched.
    for key in settings.api_key:
        matched |= secrets.compare_digest(given, key.get_secret_value().encode())
    if not matched:
        raise HTTPException(
            status_code=401,
            detail="A valid API key is required: Authorization: Bearer <key>.",
            headers={"WWW-Authenticate": "Bearer"},
        )


#: The error answers a route may give beside FastAPI's own 422, for OpenAPI.
UNAUTHORIZED = {
    401: {
        "model": ErrorResponse,
        "description": "No API key, or a wrong one, where the service requires one "
        "(SEARCH_API_KEY).",
    }
}
#: What the service cannot answer now (the table cannot be read, or too many
#: texts wait to be encoded) is unavailable, not broken: clients may retry.
UNAVAILABLE_STATUS = 503
UNAVAILABLE = {
    UNAVAILABLE_STATUS: {
        "model": ErrorResponse,
        "description": "The database or the table is unavailable, or too many "
        "texts wait to be encoded (then with Retry-After).",
    }
}


def validation_error(loc: Sequence[str | int], msg: str) -> dict[str, Any]:
    # The shape of FastAPI's own validation errors, so clients parse one format.
    return {"type": "value_error", "loc": ("body", *loc), "msg": msg}


def text_errors(
    field: str, texts: Sequence[str], settings: ServiceSettings
) -> list[dict[str, Any]]:
    """Blank or too long texts, each with its position."""
    errors = []
    for index, text in enumerate(texts):
        loc = (field, index) if field == "texts" else (field,)
        if not text.strip():
            errors.append(validation_error(loc, f"{field} must not be empty or blank."))
        elif len(text) > settings.max_text_chars:
            errors.append(
                validation_error(
                    loc,
                    f"{field} has {len(text)} characters; the limit is "
                    f"{settings.max_text_chars} (SEARCH_MAX_TEXT_CHARS).",
                )
            )
    return errors


def check_texts(texts: list[str], settings: ServiceSettings) -> None:
    """Refuse an empty list, too many texts, blank or too long ones (422)."""
    if not texts:
        errors = [validation_error(("texts",), "texts must hold at least one text.")]
    elif len(texts) > settings.max_texts:
        errors = [
            validation_error(
                ("texts",),
                f"texts holds {len(texts)} texts; the limit is "
                f"{settings.max_texts} (SEARCH_MAX_TEXTS).",
            )
        ]
    else:
        errors = text_errors("texts", texts, settings)
    if errors:
        raise RequestValidationError(errors)


def search_k(query: str, k: int | None, settings: ServiceSettings) -> int:
    """The k a /search or /review request gets: its own, else
    SEARCH_DEFAULT_K. A blank or too long query or a k out of range is
    refused (422)."""
    k = settings.default_k if k is None else k
    errors = text_errors("query", [query], settings)
    if not 1 <= k <= settings.max_k:
        errors.append(
            validation_error(
                ("k",),
                f"k must be from 1 to {settings.max_k} (SEARCH_MAX_K), got {k}.",
            )
        )
    if errors:
        raise RequestValidationError(errors)
    return k


async def _table_unavailable(_request: Request, exc: SearchError) -> JSONResponse:
    # Whatever keeps the table from being read keeps a search from answering.
    return JSONResponse(status_code=UNAVAILABLE_STATUS, content={"detail": str(exc)})


async def _queue_full(_request: Request, exc: QueueFullError) -> JSONResponse:
    return JSONResponse(
        status_code=UNAVAILABLE_STATUS,
        content={"detail": str(exc)},
        headers={"Retry-After": str(exc.retry_after)},
    )


async def _bad_filter(request: Request, exc: FilterError) -> JSONResponse:
    # Answered as FastAPI answers its own validation errors: one format.
    errors = [validation_error(("filters",), str(exc))]
    return await request_validation_exception_handler(
        request, RequestValidationError(errors)
    )


#: The answer to each error a route lets through; the app registers them.
EXCEPTION_HANDLERS: dict[type[Exception], Callable[..., Any]] = {
    SearchError: _table_unavailable,
    QueueFullError: _queue_full,
    FilterError: _bad_filter,
}
