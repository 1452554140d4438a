"""What the service serves, read from the Kedro project's configuration."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog
from kedro.io.core import DatasetError
from sentence_transformers import SentenceTransformer

from product_search.datasets import PgVectorTableDataset, load_model_by_id
from product_search.search.rerank import Reranker
from product_search.search.table import SearchError, SearchTable

logger = logging.getLogger(__name__)


def project_catalog(
    project_path: Path, env: str | None, conf_source: str | None = None
) -> DataCatalog:
    """The project's catalog for Kedro environment ``env``, as ``kedro run``
    builds it (this also sets up Kedro's logging)."""
    bootstrap_project(project_path)
    with KedroSession.create(
        project_path=project_path, env=env, conf_source=conf_source
    ) as session:
        return session.load_context().catalog


def served_model_and_table(
    catalog: DataCatalog,
) -> tuple[SentenceTransformer, SearchTable, dict[str, Any] | None]:
    """The ``product_embeddings`` search table, the model its vectors come
    from, and the table's version (None when unreadable or not deployed).

    The model is the version the promotion gate let through, which is not the
    latest fine-tuned model when the gate refused that one. Without a table,
    the catalog's ``fine_tuned_model`` (``base_model`` until training has run).
    """
    dataset = catalog.get("product_embeddings")
    if not isinstance(dataset, PgVectorTableDataset):
        raise DatasetError(
            "The catalog entry 'product_embeddings' must be a "
            f"PgVectorTableDataset, got {type(dataset).__name__}."
        )
    table = dataset.table
    try:
        info = table.info()
    except SearchError as exc:
        logger.warning("Cannot read the table's version (%s).", exc)
        info = None
    if info and info.get("model"):
        try:
            return load_model_by_id(info["model"]), table, info
        except DatasetError as exc:
            logger.warning(
                "Cannot load %s, the model of the table's vectors (%s); serving "
                "the catalog's model instead.",
                info["model"],
                exc,
            )
    try:
        model = catalog.load("fine_tuned_model")
    except DatasetError as exc:
        logger.warning(
            "No fine-tuned model to serve (%s); serving base_model instead. Run "
            "`kedro run --pipeline training` to train one.",
            exc,
        )
        model = catalog.load("base_model")
    return model, table, info


def served_reranker(info: dict[str, Any] | None) -> Reranker | None:
    """The reranker the table version ``info`` shipped with, or None (none
    shipped, or it cannot be loaded: /search then serves hybrid results)."""
    shipped = (info or {}).get("reranker")
    if not shipped:
        return None
    try:
        model = load_model_by_id(shipped["model"], cross_encoder=True)
    except DatasetError as exc:
        logger.warning(
            "Cannot load %s, the table's reranker (%s); /search will not rerank.",
            shipped["model"], exc,
        )  # fmt: skip
        return None
    return Reranker(
        model=model,
        model_id=shipped["model"],
        top_n=int(shipped["top_n"]),
        columns=tuple(shipped["text_columns"]),
    )


def promotion_decision(catalog: DataCatalog) -> dict[str, Any] | None:
    """The promotion gate's last decision, or None before the first one."""
    if "promotion_decision" not in catalog or not catalog.exists("promotion_decision"):
        return None
    return catalog.load("promotion_decision")


def search_defaults(
    catalog: DataCatalog, info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """How /search fuses its lanes unless SEARCH_* variables say otherwise: the
    fusion recorded with the table version ``info`` (tuned for its model by
    the evaluation), else the project's ``search.options`` (empty when it has
    none)."""
    if info and info.get("search_options"):
        return dict(info["search_options"])
    if "params:search" not in catalog:
        return {}
    return dict(catalog.load("params:search").get("options") or {})
