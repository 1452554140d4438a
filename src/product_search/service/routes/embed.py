"""POST /embed: texts to unit vectors."""

from fastapi import APIRouter

from product_search.service.deps import EncoderDep, SettingsDep, check_texts
from product_search.service.schemas import EmbedRequest, EmbedResponse

router = APIRouter(tags=["embed"])


@router.post(
    "/embed",
    responses={503: {"description": "Too many texts wait; see Retry-After."}},
)
async def embed(
    body: EmbedRequest, encoder: EncoderDep, settings: SettingsDep
) -> EmbedResponse:
    """Embed texts with the served model (unit vectors, cosine = dot product)."""
    check_texts(body.texts, settings)
    vectors = await encoder.aencode(body.texts)
    return EmbedResponse(
        model=encoder.model_id,
        dimension=encoder.dimension,
        embeddings=vectors.tolist(),
    )
