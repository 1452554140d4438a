"""Kedro datasets of this project."""

from product_search.datasets.answer_cache import AnswerCache, AnswerCacheDataset
from product_search.datasets.contract import ContractDataset
from product_search.datasets.credentials import CredentialsDataset
from product_search.datasets.embedding_shards import EmbeddingShardsDataset
from product_search.datasets.onnx_model import OnnxModelDataset
from product_search.datasets.optional_csv import OptionalCSVDataset
from product_search.datasets.pgvector_table import PgVectorTableDataset
from product_search.datasets.sentence_transformer_model import (
    CrossEncoderModelDataset,
    SentenceTransformerModelDataset,
    load_model_by_id,
    model_id,
    resolve_model_path,
)

__all__ = [
    "AnswerCache",
    "AnswerCacheDataset",
    "ContractDataset",
    "CredentialsDataset",
    "CrossEncoderModelDataset",
    "EmbeddingShardsDataset",
    "OnnxModelDataset",
    "OptionalCSVDataset",
    "PgVectorTableDataset",
    "SentenceTransformerModelDataset",
    "load_model_by_id",
    "model_id",
    "resolve_model_path",
]
