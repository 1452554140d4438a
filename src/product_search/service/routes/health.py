"""GET /health: the served model, the table's version, and whatever keeps
the service from serving what the project asked for."""

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from product_search.search.table import DatabaseUnavailableError, SearchError
from product_search.service.deps import UNAVAILABLE_STATUS, ServedDep, SettingsDep
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
        UNAVAILABLE_STATUS: {
            "model": HealthResponse,
            "description": "The database is unreachable or the table cannot be read.",
        }
    },
)
async def health(
    served: ServedDep, settings: SettingsDep, response: Response
) -> HealthResponse:
    """Model, backend, batcher, table version and row count, whether the
    database answers, the promotion gate's last decision, and any fallback
    (then ``degraded``, still 200: the service answers, but not with what
    the project asked for)."""
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
        "fallbacks": list(served.fallbacks),
    }
    try:
        info = await run_in_threadpool(table.info)
    except SearchError as exc:
        response.status_code = UNAVAILABLE_STATUS
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
    reasons = list(served.fallbacks)
    if info["model"] != encoder.model_id:
        reasons.append(
            f"Table {table.qualified_name} holds vectors of {info['model']} but "
            f"the service encodes queries with {encoder.model_id}: dense and "
            "hybrid results are meaningless. Rerun the deployment pipeline, or "
            "restart the service if the table was redeployed since it started."
        )
    return HealthResponse(
        status="degraded" if reasons else "ok",
        detail=" ".join(reasons) or None,
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
        "version", "model", "dimension", "vector_type", "row_count", "created_at", "analyzer",
        "bm25_k1", "bm25_b", "vocabulary_size", "search_options", "reranker",
    )  # fmt: skip
    return {key: info.get(key) for key in keys}
