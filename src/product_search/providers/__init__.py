"""Query generation providers: who writes the shopper queries for each product.

Every provider returns one row per query with the columns of
``QUERY_COLUMNS`` (``query_id`` is filled in later by the node, so providers
leave it out): ``product_id, query, query_type, provider, model``.
"""

QUERY_COLUMNS = ["query_id", "product_id", "query", "query_type", "provider", "model"]
FAILURE_COLUMNS = ["product_id", "error", "attempts"]


class QueryGenerationError(RuntimeError):
    """A problem that stops query generation as a whole (e.g. a rejected API
    key), reported in one clear sentence rather than a traceback."""
