"""POST /search: a query to the k best products, hybrid, dense or lexical."""

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from product_search.search.rerank import reranked_search
from product_search.service.deps import (
    UNAUTHORIZED,
    UNAVAILABLE,
    EncoderDep,
    RerankerDep,
    SearchOptionsDep,
    SettingsDep,
    TableDep,
    require_api_key,
    search_k,
)
from product_search.service.schemas import (
    SearchHit,
    SearchRequest,
    SearchResponse,
    filters_json,
)

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)])


@router.post("/search", responses=UNAUTHORIZED | UNAVAILABLE)
async def search(
    body: SearchRequest,
    *,
    encoder: EncoderDep,
    table: TableDep,
    settings: SettingsDep,
    options: SearchOptionsDep,
    reranker: RerankerDep,
) -> SearchResponse:
    """The k best products for the query: BM25 and the nearest vectors fused
    (hybrid, the default), or one lane alone, among the products that match
    the filters, reranked by the deployed reranker unless ``rerank`` is
    false; each hit shows its rank and score in each lane, and its rerank
    score."""
    k = search_k(body.query, body.k, settings)
    vector = None
    if body.mode != "lexical":
        [vector] = await encoder.aencode([body.query])
    reranker = reranker if body.rerank else None
    # The database and the reranker's model both block: off the event loop.
    hits = await run_in_threadpool(
        reranked_search, table, reranker, body.query, vector, k,
        mode=body.mode, options=options, filters=filters_json(body.filters),
    )  # fmt: skip
    return SearchResponse(
        model=encoder.model_id,
        query=body.query,
        k=k,
        mode=body.mode,
        reranked=reranker is not None,
        results=[
            SearchHit(
                **hit.fields,
                product_id=hit.product_id,
                score=hit.score,
                dense_rank=hit.dense_rank,
                dense_score=hit.dense_score,
                lexical_rank=hit.lexical_rank,
                lexical_score=hit.lexical_score,
                rerank_score=hit.rerank_score,
            )
            for hit in hits
        ],
    )
