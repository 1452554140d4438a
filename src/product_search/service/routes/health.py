"""GET /health: the served model and the table's version."""

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from product_search.search.table import DatabaseUnavailableError, SearchError
from product_search.service.deps import EncoderDep, TableDep
from product_search.service.schemas import (
    HealthResponse,
    PromotionDecision,
    TableVersion,
)

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    responses={
        503: {"model": HealthResponse, "description": "The database is unreachable."}
    },
)
async def health(
    encoder: EncoderDep, table: TableDep, request: Request, response: Response
) -> HealthResponse:
    """Model, table version and row count, whether the database answers, and
    the promotion gate's last decision."""
    decision = await run_in_threadpool(request.app.state.promotion)
    served = {
        "model": encoder.model_id,
        "dimension": encoder.dimension,
        "search_options": request.app.state.search_options,
        "reranker": (
            request.app.state.reranker.describe()
            if request.app.state.reranker
            else None
        ),
        "promotion": PromotionDecision.model_validate(decision) if decision else None,
    }
    try:
        info = await run_in_threadpool(table.info)
    except DatabaseUnavailableError as exc:
        response.status_code = 503
        return HealthResponse(status="error", database=False, detail=str(exc), **served)
    except SearchError as exc:
        return HealthResponse(status="error", database=True, detail=str(exc), **served)
    if info is None:
        return HealthResponse(
            status="no_table",
            database=True,
            detail=f"Table {table.qualified_name} does not exist yet: run "
            "`kedro run --pipeline deployment`.",
            **served,
        )
    return HealthResponse(
        status="ok",
        database=True,
        table=TableVersion(name=table.qualified_name, **_version_fields(info)),
        model_matches_table=info["model"] == encoder.model_id,
        **served,
    )


def _version_fields(info: dict) -> dict:
    keys = (
        "version", "model", "dimension", "row_count", "created_at", "analyzer",
        "bm25_k1", "bm25_b", "vocabulary_size", "search_options", "reranker",
    )  # fmt: skip
    return {key: info.get(key) for key in keys}
