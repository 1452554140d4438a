"""How a search table fails, in words the service and the pipelines act on:
the database unreachable, the table not deployed, a filter it cannot apply,
or any other database error with the server's own message."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import SQLAlchemyError

from product_search.errors import UserError

#: What the database access raises: SQLAlchemy's wrappers and psycopg's own.
DB_ERRORS = (SQLAlchemyError, psycopg.Error)
# How the search function refuses its arguments: invalid_parameter_value, and a
# filter value that is no value of the column's type.
REFUSED_ARGUMENTS = (
    psycopg.errors.InvalidParameterValue,
    psycopg.errors.InvalidTextRepresentation,
)


class SearchError(Exception):
    """A search table could not be written or read; the message says why."""


class DatabaseUnavailableError(SearchError):
    """The database could not be reached (as opposed to a bad table or query)."""


class TableMissingError(SearchError):
    """The table has not been deployed yet."""


class FilterError(UserError):
    """A search's filters name a column the table lacks, or a condition it
    cannot apply; the message says which and what the table has."""


def db_error(exc: BaseException, message: str) -> SearchError:
    """A SearchError with the driver's own message, without SQLAlchemy's echo
    of statement and parameters (which may hold a batch of vectors)."""
    original = getattr(exc, "orig", None) or exc
    # The server's one-line message when there is one (not the LINE/caret echo).
    diagnostic = getattr(original, "diag", None)
    detail = getattr(diagnostic, "message_primary", None) or str(original).strip()
    # Connection failures carry no SQLSTATE, or one of class 08 / 57P (server
    # shutting down or starting); disk full, lock timeouts etc. are not them.
    state = getattr(original, "sqlstate", None)
    if isinstance(original, psycopg.OperationalError) and (
        state is None or state.startswith(("08", "57P"))
    ):
        return DatabaseUnavailableError(
            f"{message}: the database is unreachable: {detail}"
        )
    if isinstance(original, psycopg.errors.UndefinedTable):
        return TableMissingError(
            f"{message}: {detail}; run the deployment pipeline to create it."
        )
    if isinstance(original, psycopg.errors.UndefinedFunction):
        # The function comes with the table: neither has been deployed yet.
        return TableMissingError(
            f"{message}: its search function does not exist; run the deployment "
            "pipeline to create it."
        )
    return SearchError(f"{message}: {detail}")
