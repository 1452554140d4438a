"""GET /health: the served model and the table's version."""

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from product_search.search.table import DatabaseUnavailableError, SearchError
from product_search.service.deps import ServedDep, SettingsDep
from product_search.service.schemas import (
    Batcher,
    HealthResponse,
    PromotionDecision,
    TableVersion,
)

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    responses={
        503: {
            "model": HealthResponse,
            "description": "The database is unreachable or the table cannot be read.",
        }
    },
)
async def health(
    served: ServedDep, settings: SettingsDep, response: Response
) -> HealthResponse:
    """Model, backend, batcher, table version and row count, whether the
    database answers, and the promotion gate's last decision."""
    encoder, table = served.encoder, served.table
    decision = await run_in_threadpool(served.promotion)
    shown = {
        "model": encoder.model_id,
        "dimension": encoder.dimension,
        "backend": encoder.backend.name,
        "batcher": Batcher(
            max_batch_texts=encoder.max_batch_texts,
            max_wait_ms=encoder.max_wait_ms,
            max_queue_texts=encoder.max_queue_texts,
            queued_texts=encoder.queued_texts,
        ),
        "search_options": served.search_options,
        "reranker": served.reranker.describe() | {"backend": served.reranker.backend}
        if served.reranker
        else None,
        "reranker_reason": None if served.reranker else served.reranker_reason,
        "promotion": PromotionDecision.model_validate(decision) if decision else None,
        "api_key_required": bool(settings.api_key),
    }
    try:
        info = await run_in_threadpool(table.info)
    # Whatever keeps the table from being read keeps /search from answering.
    except SearchError as exc:
        response.status_code = 503
        return HealthResponse(
            status="error",
            database=not isinstance(exc, DatabaseUnavailableError),
            detail=str(exc),
            **shown,
        )
    if info is None:
        return HealthResponse(
            status="no_table",
            database=True,
            detail=f"Table {table.qualified_name} does not exist yet: run "
            "`kedro run --pipeline deployment`.",
            **shown,
        )
    return HealthResponse(
        status="ok",
        database=True,
        table=TableVersion(
            name=table.qualified_name,
            search_function=table.qualified_function,
            **_version_fields(info),
        ),
        model_matches_table=info["model"] == encoder.model_id,
        **shown,
    )


def _version_fields(info: dict) -> dict:
    keys = (
        "version", "model", "dimension", "row_count", "created_at", "analyzer",
        "bm25_k1", "bm25_b", "vocabulary_size", "search_options", "reranker",
    )  # fmt: skip
    return {key: info.get(key) for key in keys}
