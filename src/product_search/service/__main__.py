"""``python -m product_search.service [--env ENV] [--host HOST] [--port PORT]``:
serve the Kedro project's model and vector table (run from the project root)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import torch
import uvicorn
from kedro.io.core import DatasetError
from pydantic import ValidationError

from product_search.search.table import SearchError, SearchTable
from product_search.service.encoder import Encoder
from product_search.service.main import create_app
from product_search.service.project import (
    project_catalog,
    promotion_decision,
    search_defaults,
    served_model_and_table,
    served_reranker,
)
from product_search.service.settings import ServiceSettings

logger = logging.getLogger("product_search.service")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m product_search.service",
        description="Serve POST /embed, POST /search and GET /health. Options "
        "override the SEARCH_ENV, SEARCH_HOST and SEARCH_PORT variables.",
    )
    parser.add_argument("--env", help="Kedro environment (default: local)")
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: 8000)")
    parser.add_argument(
        "--project-path", type=Path, default=Path.cwd(), help="Kedro project root"
    )
    parser.add_argument("--conf-source", help="configuration folder (default: conf)")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in {
            "env": args.env,
            "host": args.host,
            "port": args.port,
        }.items()
        if value is not None
    }
    try:
        settings = ServiceSettings(**overrides)
        catalog = project_catalog(
            args.project_path.resolve(), settings.env, args.conf_source
        )
        model, table, info = served_model_and_table(catalog)
        options = settings.search_options(search_defaults(catalog, info))
        reranker = settings.reranker(served_reranker(info))
    # Bad settings, not a Kedro project, a broken catalog: a message, not a
    # traceback.
    except (ValidationError, DatasetError, RuntimeError, ValueError, OSError) as exc:
        parser.exit(1, f"Cannot start the service: {exc}\n")
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    encoder = Encoder(model, settings.max_batch_texts)
    _report_table(encoder, table)
    # uvicorn re-raises SIGTERM after its graceful shutdown; as an exit (not a
    # kill) it lets the embedded PostgreSQL stop with its last user.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        create_app(
            encoder,
            table,
            settings,
            options,
            lambda: promotion_decision(catalog),
            reranker=reranker,
        ),
        host=settings.host,
        port=settings.port,
    )


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
            "Serving %s over %s version %s (%d rows).",
            encoder.model_id,
            table.qualified_name,
            info["version"],
            info["row_count"],
        )


if __name__ == "__main__":
    main()
