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

from product_search.datasets import PgVectorTableDataset
from product_search.search.table import SearchTable

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
) -> tuple[SentenceTransformer, SearchTable]:
    """The catalog's ``fine_tuned_model`` (``base_model`` until training has
    run) and its ``product_embeddings`` search table."""
    try:
        model = catalog.load("fine_tuned_model")
    except DatasetError as exc:
        logger.warning(
            "No fine-tuned model to serve (%s); serving base_model instead. Run "
            "`kedro run --pipeline training` to train one.",
            exc,
        )
        model = catalog.load("base_model")
    table = catalog.get("product_embeddings")
    if not isinstance(table, PgVectorTableDataset):
        raise DatasetError(
            "The catalog entry 'product_embeddings' must be a "
            f"PgVectorTableDataset, got {type(table).__name__}."
        )
    return model, table.table


def search_defaults(catalog: DataCatalog) -> dict[str, Any]:
    """The project's ``search.options`` parameters (empty when it has none)."""
    if "params:search" not in catalog:
        return {}
    return dict(catalog.load("params:search").get("options") or {})
