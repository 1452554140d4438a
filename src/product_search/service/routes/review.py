"""The search review page (``GET /``) and its data (``POST /review``): one
query through each way the service searches, side by side, with the human
grade of each hit and each column's NDCG@10 when the query is judged."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from product_search.search.rerank import reranked_search
from product_search.search.table import Hit, Mode
from product_search.service.deps import (
    UNAUTHORIZED,
    UNAVAILABLE,
    Served,
    ServedDep,
    SettingsDep,
    require_api_key,
    search_k,
)
from product_search.service.schemas import (
    ReviewColumn,
    ReviewHit,
    ReviewRequest,
    ReviewResponse,
    filters_json,
)
from product_search.text import normalise_query

router = APIRouter(tags=["review"])

#: The cutoff of each column's NDCG, the evaluation's headline metric.
NDCG_AT = 10


def ndcg(hits: list[Hit], grades: Mapping[str, int]) -> float:
    """NDCG@10 of ``hits`` in their order, by :func:`graded_metrics` (ranx,
    linear gains), scored as the evaluation scores a served order."""
    # Here, not at the top: ranx brings numba and scipy, which the service
    # would otherwise import at start-up for a page few requests use.
    from product_search.metrics import graded_metrics, ranked_run  # noqa: PLC0415

    metric = f"ndcg@{NDCG_AT}"
    run = ranked_run([hit.product_id for hit in hits])
    return graded_metrics({"query": grades}, {"query": run}, [metric])[metric]["query"]


def review_columns(
    served: Served,
    query: str,
    vectors: list[np.ndarray],
    k: int,
    grades: Mapping[str, int] | None,
    *,
    filters: Mapping[str, Any] | None = None,
) -> list[ReviewColumn]:
    """Each column's first ``k`` hits through :func:`reranked_search`, the
    code of /search; ``vectors`` are the query's by the served model, then by
    the base model when the service compares it. Blocks on the database."""
    depth = max(k, NDCG_AT)
    served_model = served.encoder.model_id

    def search(mode: Mode, *, rerank: bool = False) -> list[Hit]:
        reranker = served.reranker if rerank else None
        return reranked_search(
            served.table, reranker, query, vectors[0], depth,
            mode=mode, options=served.search_options, filters=filters,
        )  # fmt: skip

    lanes: list[tuple[str, str | None, list[Hit]]] = []
    if served.base_encoder is not None and served.base_table is not None:
        base_hits = reranked_search(
            served.base_table, None, query, vectors[1], depth,
            mode="dense", options=served.search_options, filters=filters,
        )  # fmt: skip
        lanes.append(("dense (base model)", served.base_encoder.model_id, base_hits))
    lanes += [
        ("dense (served model)", served_model, search("dense")),
        ("lexical (BM25)", None, search("lexical")),
        ("hybrid", served_model, search("hybrid")),
    ]
    if served.reranker is not None:
        lanes.append(("hybrid + rerank", served_model, search("hybrid", rerank=True)))
    return [
        ReviewColumn(
            name=name,
            model=model,
            ndcg=None if grades is None else ndcg(hits[:NDCG_AT], grades),
            hits=[
                ReviewHit(
                    rank=rank,
                    product_id=hit.product_id,
                    title=hit.fields.get("title"),
                    score=hit.score,
                    dense_score=hit.dense_score,
                    lexical_score=hit.lexical_score,
                    rerank_score=hit.rerank_score,
                    grade=None if grades is None else grades.get(hit.product_id),
                )
                for rank, hit in enumerate(hits[:k], start=1)
            ],
        )
        for name, model, hits in lanes
    ]


@cache
def _page() -> str:
    page = resources.files("product_search.service") / "static" / "review.html"
    return page.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def review_page() -> HTMLResponse:
    """A page for people: a query box and the columns of ``POST /review``."""
    return HTMLResponse(_page())


@router.get(
    "/review/queries", dependencies=[Depends(require_api_key)], responses=UNAUTHORIZED
)
async def judged_queries(served: ServedDep) -> list[str]:
    """The judged queries (normalised), which the page suggests."""
    return sorted(served.judgments or {})


@router.post(
    "/review",
    dependencies=[Depends(require_api_key)],
    responses=UNAUTHORIZED | UNAVAILABLE,
)
async def review(
    body: ReviewRequest, *, served: ServedDep, settings: SettingsDep
) -> ReviewResponse:
    """The query's k best products by the base model (where the service has
    it), the served model, BM25, hybrid search and, where deployed, hybrid
    reranked, each among the products that match the filters; each hit with
    its scores and, for a judged query, its grade, and each column with its
    NDCG@10 (of its first 10 hits, whatever k)."""
    k = search_k(body.query, body.k, settings)
    encoders = [served.encoder]
    if served.base_encoder is not None and served.base_table is not None:
        encoders.append(served.base_encoder)
    encoded = await asyncio.gather(*(e.aencode([body.query]) for e in encoders))
    grades = (served.judgments or {}).get(normalise_query(body.query))
    columns = await run_in_threadpool(
        review_columns, served, body.query, [v[0] for v in encoded], k, grades,
        filters=filters_json(body.filters),
    )  # fmt: skip
    return ReviewResponse(
        query=body.query,
        k=k,
        judged=grades is not None,
        judged_queries=len(served.judgments or {}),
        columns=columns,
    )
