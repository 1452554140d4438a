"""POST /embed: texts to unit vectors, and on request their analysed terms."""

from fastapi import APIRouter, Depends

from product_search.search.analyzer import analyze
from product_search.service.deps import (
    UNAUTHORIZED,
    UNAVAILABLE,
    EncoderDep,
    SettingsDep,
    check_texts,
    require_api_key,
)
from product_search.service.schemas import EmbedRequest, EmbedResponse

router = APIRouter(tags=["embed"], dependencies=[Depends(require_api_key)])


@router.post(
    "/embed",
    responses=UNAUTHORIZED | UNAVAILABLE,
    response_model_exclude_none=True,
)
async def embed(
    body: EmbedRequest, encoder: EncoderDep, settings: SettingsDep
) -> EmbedResponse:
    """Embed texts with the served model (unit vectors, cosine = dot product).
    With ``"include": ["lexical"]``, also each text's analysed terms: with the
    vector, what the table's SQL search function needs (see docs/search.md)."""
    check_texts(body.texts, settings)
    vectors = await encoder.aencode(body.texts)
    return EmbedResponse(
        model=encoder.model_id,
        dimension=encoder.dimension,
        embeddings=vectors.tolist(),
        terms=[analyze(text) for text in body.texts]
        if "lexical" in body.include
        else None,
    )
