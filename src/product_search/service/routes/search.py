"""POST /search: a query to the k best products, hybrid, dense or lexical."""

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from product_search.search.table import SearchError
from product_search.service.deps import (
    EncoderDep,
    SearchOptionsDep,
    SettingsDep,
    TableDep,
    check_search,
)
from product_search.service.schemas import SearchHit, SearchRequest, SearchResponse

router = APIRouter(tags=["search"])


@router.post(
    "/search",
    responses={503: {"description": "The database or the table is unavailable."}},
)
async def search(
    body: SearchRequest,
    encoder: EncoderDep,
    table: TableDep,
    settings: SettingsDep,
    options: SearchOptionsDep,
) -> SearchResponse:
    """The k best products for the query: BM25 and the nearest vectors fused
    (hybrid, the default), or one lane alone; each hit shows its rank and
    score in each lane."""
    k = settings.default_k if body.k is None else body.k
    check_search(body.query, k, settings)
    vector = None
    if body.mode != "lexical":
        [vector] = await encoder.aencode([body.query])
    try:
        hits = await run_in_threadpool(
            table.search, body.query, vector, k, mode=body.mode, options=options
        )
    except SearchError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    return SearchResponse(
        model=encoder.model_id,
        query=body.query,
        k=k,
        mode=body.mode,
        results=[
            SearchHit(
                **hit.fields,
                product_id=hit.product_id,
                score=hit.score,
                dense_rank=hit.dense_rank,
                dense_score=hit.dense_score,
                lexical_rank=hit.lexical_rank,
                lexical_score=hit.lexical_score,
            )
            for hit in hits
        ],
    )
