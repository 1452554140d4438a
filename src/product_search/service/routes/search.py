"""POST /search: a query to the k most similar products."""

from fastapi import APIRouter, HTTPException
from kedro.io.core import DatasetError
from starlette.concurrency import run_in_threadpool

from product_search.service.deps import EncoderDep, SettingsDep, TableDep, check_search
from product_search.service.schemas import SearchHit, SearchRequest, SearchResponse

router = APIRouter(tags=["search"])


@router.post(
    "/search",
    responses={503: {"description": "The database or the table is unavailable."}},
)
async def search(
    body: SearchRequest, encoder: EncoderDep, table: TableDep, settings: SettingsDep
) -> SearchResponse:
    """The k products whose vectors are nearest to the query's (HNSW index)."""
    k = settings.default_k if body.k is None else body.k
    check_search(body.query, k, settings)
    [vector] = await encoder.aencode([body.query])
    try:
        hits = await run_in_threadpool(
            table.search, vector, k, ef_search=settings.ef_search
        )
    except DatasetError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    return SearchResponse(
        model=encoder.model_id,
        query=body.query,
        k=k,
        results=[SearchHit(**hit) for hit in hits],
    )
