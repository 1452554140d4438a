"""The one normaliser of query text, used wherever two queries are compared.

* :func:`normalise_query` is the form a query is kept and shown in: data
  generation stores generated and logged queries in it (and drops duplicates by
  it), and the review page looks a typed query up among the judged queries by
  it and suggests the judged queries in it.
* :func:`match_key` is a looser equality built on it, for the leakage guard
  only: a training query that matches a judged query even after punctuation is
  ignored is removed, because training on a near copy of a test query inflates
  the evaluation, while removing one query too many costs almost nothing.
  The review page does not use it: there a looser match would show the grades
  of another query ("1/2 in" is not "1 2 in").
"""

from __future__ import annotations

import re

import ftfy

_PUNCTUATION = re.compile(r"[^\w\s]+")
# Quotes and sentence punctuation around a query are not part of it.
_WRAPPING = " \"'`.,;:!?"


def normalise_query(query: str) -> str:
    """Lower case, repaired (mojibake, curly quotes), single-spaced, without
    wrapping quotes or trailing punctuation."""
    # lower(), not casefold(): the result is shown to people, and casefold()
    # rewrites words ("maße" -> "masse").
    text = " ".join(ftfy.fix_text(str(query)).lower().split())
    return text.strip(_WRAPPING)


def match_key(query: str) -> str:
    """The form in which two queries count as the same for the leakage guard:
    :func:`normalise_query`, then punctuation as spaces, single spaces."""
    return " ".join(_PUNCTUATION.sub(" ", normalise_query(query)).split())
