"""``python -m product_search.service [--env ENV] [--host HOST] [--port PORT]``:
serve the Kedro project's model and vector table (run from the project root)."""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

import uvicorn
from kedro.io.core import DatasetError
from pydantic import ValidationError

from product_search.service.main import create_app
from product_search.service.project import project_catalog, serve_project
from product_search.service.server import uvicorn_options
from product_search.service.settings import ServiceSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m product_search.service",
        description="Serve POST /embed, POST /search and GET /health. Options "
        "override the SEARCH_ENV, SEARCH_HOST, SEARCH_PORT, SEARCH_PROJECT_PATH, "
        "SEARCH_CONF_SOURCE and SEARCH_WORKERS variables.",
    )
    parser.add_argument("--env", help="Kedro environment (default: local)")
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: 8000)")
    parser.add_argument(
        "--project-path", type=Path, help="Kedro project root (default: here)"
    )
    parser.add_argument("--conf-source", help="configuration folder (default: conf)")
    parser.add_argument("--workers", type=int, help="server processes (default: 1)")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in {
            "env": args.env,
            "host": args.host,
            "port": args.port,
            "project_path": args.project_path,
            "conf_source": args.conf_source,
            "workers": args.workers,
        }.items()
        if value is not None
    }
    # Read before uvicorn starts, so that bad settings, a folder that is not a
    # Kedro project or a broken catalog are a message, not a traceback.
    try:
        settings = ServiceSettings(**overrides)
        catalog = project_catalog(
            settings.project_path.resolve(), settings.env, settings.conf_source
        )
    except (ValidationError, DatasetError, RuntimeError, ValueError, OSError) as exc:
        parser.exit(1, f"Cannot start the service: {exc}\n")
    if settings.workers == 1:
        app = create_app(
            settings, load=functools.partial(serve_project, catalog=catalog)
        )
        uvicorn.run(app, **uvicorn_options(settings))
        return
    # Each worker process builds its app from the environment.
    for name, value in overrides.items():
        os.environ[f"SEARCH_{name.upper()}"] = str(value)
    uvicorn.run(
        "product_search.service.main:create_app",
        factory=True,
        workers=settings.workers,
        **uvicorn_options(settings),
    )


if __name__ == "__main__":
    main()
