"""The service's settings, from ``SEARCH_*`` environment variables."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from product_search.search.rerank import Reranker
from product_search.search.table import SearchOptions


class ServiceSettings(BaseSettings):
    """Where the service listens and what a request may ask for.

    Every field can be set through the environment, e.g. ``SEARCH_PORT=9000``
    or ``SEARCH_MAX_K=50``; command-line options win over the environment.
    """

    model_config = SettingsConfigDict(env_prefix="SEARCH_")

    project_path: Path = Field(
        default_factory=Path.cwd, description="The Kedro project's root folder."
    )
    env: str | None = Field(None, description="Kedro environment (default: local).")
    conf_source: str | None = Field(
        None, description="Configuration folder (default: the project's conf)."
    )
    host: str = "127.0.0.1"
    # Keys that /embed, /search and /review require as `Authorization: Bearer`;
    # SEARCH_API_KEY holds one, or several separated by commas while clients
    # move to a new one. Empty: no key is asked for.
    api_key: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    port: int = Field(8000, ge=1, le=65535)
    # Server processes, each with its own model and batcher. Python runs one
    # request at a time per process, so on 2 cores 2 workers of 1 thread
    # each answer more requests than 1 worker of 2 threads
    # (bench/results/embed_service.md).
    workers: int = Field(1, ge=1)
    max_texts: int = Field(64, ge=1, description="Texts per /embed request.")
    max_text_chars: int = Field(1000, ge=1, description="Characters per text or query.")
    max_k: int = Field(100, ge=1, le=1000, description="Largest k for /search.")
    default_k: int = Field(10, ge=1, description="k when a request gives none.")
    # How /search fuses its lanes: unset ones come from the fusion recorded
    # with the table version (tuned for its model), else from the project's
    # `search.options` parameters (conf/base/parameters_search.yml).
    fusion: Literal["rrf", "weighted"] | None = None
    rrf_k: int | None = Field(None, ge=1)
    dense_weight: float | None = Field(None, ge=0)
    lexical_weight: float | None = Field(None, ge=0)
    dense_depth: int | None = Field(None, ge=1, le=1000)
    lexical_depth: int | None = Field(None, ge=1, le=1000)
    # Bounded BM25: candidates per query term of the lexical lane; 0: exact.
    lexical_bound: int | None = Field(None, ge=0)
    # HNSW candidate list size; the benchmark (bench/pgvector_hnsw.py) shows
    # its recall and latency. Raised to the dense depth when that is larger.
    ef_search: int | None = Field(None, ge=1, le=1000)
    # A filtered dense lane ranks its matches exactly up to this many, else
    # through HNSW with iterative scan (bench/results/filtered_search.md).
    filter_exact_rows: int | None = Field(None, ge=0)
    # The hybrid candidates the table's reranker reorders (unset: the number
    # it was deployed with); 0 turns reranking off.
    rerank_top_n: int | None = Field(None, ge=0, le=1000)
    # The reranker's score against the hybrid score in the served order (unset:
    # the weight the evaluation tuned and the deployment recorded); 1 orders
    # by the reranker alone.
    rerank_weight: float | None = Field(None, ge=0, le=1)
    # The reranker's ONNX graph (unset: the one the deployment recorded, int8
    # when the evaluation found it within reranker.serving.max_int8_loss).
    rerank_variant: Literal["fp32", "int8"] | None = None
    # Texts per model.encode call when concurrent requests are encoded together.
    max_batch_texts: int = Field(64, ge=1)
    # How long an idle batcher waits for more requests before it encodes. 0
    # encodes at once, batching only the requests that arrived during the
    # previous encode: the lowest latency for a lone client.
    max_wait_ms: float = Field(0.0, ge=0, le=1000)
    # Texts waiting to be encoded; a request past it gets a 503 at once.
    max_queue_texts: int = Field(1024, ge=1)
    # What encodes the queries: the deployment's ONNX export of the served
    # model with ONNX Runtime (several times faster on CPU, same vectors), or
    # the model in PyTorch. auto: ONNX when the export is of the served model.
    backend: Literal["auto", "torch", "onnx"] = "auto"
    # The ONNX graph: fp32, or int8 where the deployment quantised one
    # (onnx.int8; the evaluation report states its NDCG@10 change).
    onnx_variant: Literal["fp32", "int8"] = "fp32"
    # Threads of either backend (None: one per core). On a machine shared with
    # other CPU-bound work, 1 avoids threads waiting on each other for a core
    # (see bench/results/embed_service.md).
    threads: int | None = Field(None, ge=1)

    @field_validator("api_key", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    def search_options(self, defaults: dict[str, Any] | None = None) -> SearchOptions:
        """``defaults`` (the project's ``search.options``) with every setting
        given here in their place."""
        given = {
            name: getattr(self, name)
            for name in SearchOptions.model_fields
            if getattr(self, name) is not None
        }
        return SearchOptions(**{**(defaults or {}), **given})

    def reranker(self, shipped: Reranker | None) -> Reranker | None:
        """The table's reranker with ``rerank_top_n`` and ``rerank_weight`` in
        place of its own; None without one, or with ``rerank_top_n`` or
        ``rerank_weight`` 0 (it would not change the order)."""
        if shipped is None or self.rerank_top_n == 0 or self.rerank_weight == 0:
            return None
        given = {
            name: value
            for name, value in (
                ("top_n", self.rerank_top_n),
                ("weight", self.rerank_weight),
            )
            if value is not None
        }
        return dataclasses.replace(shipped, **given)

    @model_validator(mode="after")
    def _limits_fit_together(self) -> ServiceSettings:
        if self.default_k > self.max_k:
            raise ValueError(
                f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})."
            )
        # Otherwise a full request would be refused even by an idle service.
        if self.max_queue_texts < self.max_texts:
            raise ValueError(
                f"max_queue_texts ({self.max_queue_texts}) must be at least "
                f"max_texts ({self.max_texts})."
            )
        return self
