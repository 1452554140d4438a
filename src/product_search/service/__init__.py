"""The search service: ``POST /embed``, ``POST /search`` and ``GET /health``
over the fine-tuned model and the pgvector table.

Start it from the project root with::

    python -m product_search.service [--env ENV] [--host HOST] [--port PORT]

or with uvicorn's own options, configured by ``SEARCH_*`` variables::

    uvicorn --factory product_search.service.main:create_app \
        --http product_search.service.server:UpgradeIgnoringHttpToolsProtocol
"""

from product_search.service.main import create_app

__all__ = ["create_app"]
