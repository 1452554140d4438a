"""What the service serves, read from the Kedro project's configuration."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog
from kedro.io.core import DatasetError
from sentence_transformers import SentenceTransformer

from product_search.database import leave_embedded_server
from product_search.datasets import PgVectorTableDataset, load_model_by_id
from product_search.search.onnx import OnnxExport, OnnxReranker
from product_search.search.rerank import Reranker
from product_search.search.table import SearchError, SearchTable
from product_search.service.deps import Served
from product_search.service.encoder import Encoder, TorchBackend, build_backend
from product_search.service.fallbacks import fall_back
from product_search.service.judgments import judgments_by_query
from product_search.service.settings import ServiceSettings

logger = logging.getLogger(__name__)


@contextmanager
def serve_project(
    settings: ServiceSettings, catalog: DataCatalog | None = None
) -> Iterator[Served]:
    """What the service serves from the Kedro project at
    ``settings.project_path`` (or from its ``catalog``, already read): the
    model of the table's vectors, the table, its reranker and fusion with the
    settings in their place, the promotion gate's last decision, and each
    fallback taken on the way (for /health). The table's connections, and its
    embedded database, are released on exit."""
    if catalog is None:
        catalog = project_catalog(
            settings.project_path.resolve(), settings.env, settings.conf_source
        )
    fallbacks: list[str] = []
    model, table, info = served_model_and_table(catalog, fallbacks)
    base_model, base_table = None, None
    try:
        export = None if settings.backend == "torch" else served_onnx(catalog)
        encoder = Encoder(
            build_backend(settings, model, export, fallbacks),
            max_batch_texts=settings.max_batch_texts,
            max_wait_ms=settings.max_wait_ms,
            max_queue_texts=settings.max_queue_texts,
        )
        _report_table(encoder, table)
        reranker = settings.reranker(served_reranker(info, export, settings, fallbacks))
        base_model, base_table = review_base(catalog, encoder.model_id, fallbacks)
        judgments = review_judgments(catalog, fallbacks)
        yield Served(
            encoder=encoder,
            table=table,
            search_options=settings.search_options(search_defaults(catalog, info)),
            reranker=reranker,
            reranker_reason=None if reranker else no_reranker_reason(info, settings),
            promotion=functools.partial(promotion_decision, catalog),
            base_encoder=None
            if base_model is None
            else Encoder(TorchBackend(base_model, settings.max_batch_texts)),
            base_table=base_table,
            judgments=judgments,
            fallbacks=tuple(fallbacks),
        )
    finally:
        release_table(table)
        if base_table is not None:
            # After the served table: it shares the embedded server, if any.
            release_table(base_table)


def release_table(table: SearchTable) -> None:
    """Close the table's connections and leave the embedded PostgreSQL it may
    run on (see :func:`product_search.database.leave_embedded_server`)."""
    table.engine.dispose()
    leave_embedded_server(table.engine.url)


def _report_table(encoder: Encoder, table: SearchTable) -> None:
    """Start the database (the embedded one starts on demand) and say what is served."""
    try:
        info = table.info()
    except SearchError as exc:
        logger.warning(
            "The vector table is unavailable; /search will answer 503: %s", exc
        )
        return
    if info is None:
        logger.warning(
            "Table %s does not exist yet; run `kedro run --pipeline deployment`.",
            table.qualified_name,
        )
    elif info["model"] != encoder.model_id:
        logger.warning(
            "Table %s holds vectors of %s but the service encodes with %s; "
            "rerun the deployment pipeline.",
            table.qualified_name,
            info["model"],
            encoder.model_id,
        )
    else:
        logger.info(
            "Serving %s over %s version %s (%d rows, %s) with %s.",
            encoder.model_id,
            table.qualified_name,
            info["version"],
            info["row_count"],
            info["vector_type"],
            encoder.backend.name,
        )


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
    catalog: DataCatalog, fallbacks: list[str] | None = None
) -> tuple[SentenceTransformer, SearchTable, dict[str, Any] | None]:
    """The ``product_embeddings`` search table, the model its vectors come
    from, and the table's version (None when unreadable or not deployed).

    The model is the version the promotion gate let through, which is not the
    latest fine-tuned model when the gate refused that one. Without a table,
    the catalog's ``fine_tuned_model`` (``base_model`` until training has run).
    Serving the catalog's model where the table names one is a fallback, kept
    in ``fallbacks``, as is ``base_model`` in place of the fine-tuned one.
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
        fall_back(
            fallbacks,
            f"Cannot read the table's version at start-up ({exc}); serving the "
            "catalog's model, the project's fusion and no reranker, which may not "
            "be what the table was deployed with. Restart the service once the "
            "table can be read.",
            logger,
        )
        info = None
    if info and info.get("model"):
        try:
            return load_model_by_id(info["model"]), table, info
        except DatasetError as exc:
            fall_back(
                fallbacks,
                f"Cannot load {info['model']}, the model of the table's vectors "
                f"({exc}); serving the catalog's model instead.",
                logger,
            )
    try:
        model = catalog.load("fine_tuned_model")
    except DatasetError as exc:
        fall_back(
            fallbacks,
            f"No fine-tuned model to serve ({exc}); serving base_model instead. "
            "Run `kedro run --pipeline training` to train one.",
            logger,
        )
        model = catalog.load("base_model")
    return model, table, info


def served_onnx(catalog: DataCatalog) -> OnnxExport | None:
    """The deployment's ONNX export (``onnx_model``), or None before the
    first deployment that made one."""
    if "onnx_model" not in catalog or not catalog.exists("onnx_model"):
        return None
    return catalog.load("onnx_model")


def served_reranker(
    info: dict[str, Any] | None,
    export: OnnxExport | None = None,
    settings: ServiceSettings | None = None,
    fallbacks: list[str] | None = None,
) -> Reranker | None:
    """The reranker the table version ``info`` shipped with, or None (none
    shipped, its weight is 0, or it cannot be loaded: /search then serves
    hybrid results). It runs with ONNX Runtime where the deployment's ONNX
    ``export`` carries it (``settings`` choose the variant and threads), else
    in PyTorch. A reranker that cannot be loaded, a missing graph of the
    variant asked for, and PyTorch beside an export without it are fallbacks,
    kept in ``fallbacks``."""
    shipped = (info or {}).get("reranker") or {}
    if not shipped.get("model") or not shipped.get("weight", 1.0):
        return None
    onnx = export.reranker if export is not None else None
    if onnx is not None and onnx.model_id == shipped["model"]:
        settings = settings or ServiceSettings()
        variant = (
            settings.rerank_variant or shipped.get("variant") or settings.onnx_variant
        )
        if variant not in onnx.graphs:
            fall_back(
                fallbacks,
                f"The ONNX export of the reranker {shipped['model']} has no "
                f"{variant} graph; it reranks with fp32. Rerun the deployment "
                "pipeline.",
                logger,
            )
            variant = "fp32"
        model = OnnxReranker(onnx, variant, settings.threads)
    else:
        if export is not None:
            fall_back(
                fallbacks,
                "The ONNX export carries no export of the table's reranker "
                f"{shipped['model']}; it reranks in PyTorch. Rerun the deployment "
                "pipeline to export it.",
                logger,
            )
        try:
            model = load_model_by_id(shipped["model"], cross_encoder=True)
        except DatasetError as exc:
            fall_back(
                fallbacks,
                f"Cannot load {shipped['model']}, the table's reranker ({exc}); "
                "/search will not rerank.",
                logger,
            )
            return None
    return Reranker(
        model=model,
        model_id=shipped["model"],
        top_n=int(shipped["top_n"]),
        columns=tuple(shipped["text_columns"]),
        weight=float(shipped.get("weight", 1.0)),
    )


def no_reranker_reason(info: dict[str, Any] | None, settings: ServiceSettings) -> str:
    """Why /search does not rerank, for /health."""
    shipped = (info or {}).get("reranker") or {}
    if not shipped.get("model"):
        return shipped.get("reason") or "The table version shipped no reranker."
    if not shipped.get("weight", 1.0):
        return "The table's reranker weighs 0 against the hybrid score."
    if settings.rerank_top_n == 0:
        return "SEARCH_RERANK_TOP_N=0 turns reranking off."
    if settings.rerank_weight == 0:
        return "SEARCH_RERANK_WEIGHT=0 turns reranking off."
    return f"The reranker {shipped['model']} could not be loaded (see fallbacks)."


def review_base(
    catalog: DataCatalog, served_model_id: str, fallbacks: list[str] | None = None
) -> tuple[SentenceTransformer | None, SearchTable | None]:
    """The base model and its vectors for the review page's comparison: the
    evaluation's ``base_search_table`` and the model its vectors come from,
    when the evaluation has built it for a model other than the served one;
    else (None, None) and the page shows no base-model column (a fallback,
    kept in ``fallbacks``, where the table or its model cannot be read)."""
    if "base_search_table" not in catalog:
        return None, None
    table = catalog.get("base_search_table").table
    try:
        info = table.info()
        if info is None or info.get("model") in (None, served_model_id):
            table.engine.dispose()
            return None, None
        model = load_model_by_id(info["model"])
    except (SearchError, DatasetError) as exc:
        fall_back(
            fallbacks, f"The review page has no base-model column ({exc}).", logger
        )
        table.engine.dispose()
        return None, None
    logger.info(
        "The review page compares %s over %s.", info["model"], table.qualified_name
    )
    return model, table


def review_judgments(
    catalog: DataCatalog, fallbacks: list[str] | None = None
) -> dict[str, dict[str, int]] | None:
    """The relevance judgments by normalised query text for the review page,
    or None when the project has none, or they cannot be read (a fallback,
    kept in ``fallbacks``)."""
    if "judged_queries" not in catalog or "relevance_judgments" not in catalog:
        return None
    try:
        judgments = judgments_by_query(
            catalog.load("judged_queries"), catalog.load("relevance_judgments")
        )
    except (DatasetError, KeyError, ValueError) as exc:
        fall_back(fallbacks, f"The review page shows no judgments: {exc}", logger)
        return None
    return judgments or None


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
