"""The one query normaliser and the leakage guard's looser key."""

from __future__ import annotations

import pytest

from product_search.text import match_key, normalise_query


@pytest.mark.parametrize(
    ("typed", "normalised"),
    [
        (" Hiking  BOOTS", "hiking boots"),
        ('  "Cast IRON pan"  ', "cast iron pan"),  # wrapping quotes go
        ("Wireless Earbuds!", "wireless earbuds"),  # and trailing punctuation
        ("\u201cdrill bits\u201d", "drill bits"),  # curly quotes too
        ("Caf\u00c3\u00a9 table", "café table"),  # mojibake repaired
        ("1/2 in. PVC-Tee", "1/2 in. pvc-tee"),  # inner punctuation stays
        ("Maße", "maße"),  # lower(), not casefold(): shown as written
    ],
)
def test_normalise_query(typed, normalised):
    assert normalise_query(typed) == normalised


def test_normalise_query_is_idempotent():
    once = normalise_query('  "Caf\u00c3\u00a9 Table, 1/2 in."  ')
    assert normalise_query(once) == once


def test_match_key_ignores_case_whitespace_and_punctuation():
    assert match_key("  1/2 in. PVC-Tee ") == match_key("1 2 in pvc tee")
    assert match_key("Caf\u00c3\u00a9 Table!") == "café table"


def test_match_key_is_looser_than_normalise_query():
    # The review page must not take "1/2 in" for "1 2 in"; the leakage guard does.
    assert normalise_query("1/2 in") != normalise_query("1 2 in")
    assert match_key("1/2 in") == match_key("1 2 in")
