"""Query generation providers: who writes the shopper queries for each product.

Every provider reads prepared products (``PRODUCT_COLUMNS`` and ``text``) and
returns one row per query with ``PROVIDER_COLUMNS``; the node then adds the
``query_id`` of ``QUERY_COLUMNS``. Products that failed come back apart, with
``FAILURE_COLUMNS``.
"""

PRODUCT_COLUMNS = ["product_id", "title", "brand", "category", "price", "description"]
PROVIDER_COLUMNS = ["product_id", "query", "query_type", "provider", "model"]
QUERY_COLUMNS = ["query_id", *PROVIDER_COLUMNS]
FAILURE_COLUMNS = ["product_id", "error", "attempts"]


class QueryGenerationError(RuntimeError):
    """A problem that stops query generation as a whole (e.g. a rejected API
    key), reported in one clear sentence rather than a traceback."""
