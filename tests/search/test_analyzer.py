"""The one analyser of product text and queries."""

from __future__ import annotations

import pytest

from product_search.search.analyzer import analyze


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        # case and accents
        ("Café CRÈME Brûlée", ["cafe", "creme", "brule"]),
        # plurals and other endings stem alike
        ("boards board", ["board", "board"]),
        ("Lights lighting", ["light", "light"]),
        # a number with a unit: the number, and number + the unit's one spelling
        ("3/4 in", ["3/4", "3/4in"]),
        ("3/4in", ["3/4", "3/4in"]),
        ("3/4 in.", ["3/4", "3/4in"]),
        ('3/4"', ["3/4", "3/4in"]),
        ("3/4 inch", ["3/4", "3/4in"]),
        ("8 ft.", ["8", "8ft"]),
        ("8'", ["8", "8ft"]),
        ("8 feet", ["8", "8ft"]),
        ("20-Volt", ["20", "20v"]),
        ("2 gal.", ["2", "2gal"]),
        # mixed numbers and thousands
        ("1 1/2 in", ["1-1/2", "1-1/2in"]),
        ("1-1/2 in.", ["1-1/2", "1-1/2in"]),
        ("1,500 W", ["1500", "1500w"]),
        # sizes
        ("2x4", ["2", "4", "2x4"]),
        ("2 x 4", ["2", "4", "2x4"]),
        ("2 by 4", ["2", "4", "2x4"]),
        ("2 in. x 4 in.", ["2", "2in", "4", "4in", "2x4"]),
        # "in" and "ft" are never stop words; "the" and "for" are
        ("faucet in chrome", ["faucet", "in", "chrome"]),
        ("ft", ["ft"]),
        ("the hose for the garden", ["hose", "garden"]),
        # model numbers stay whole
        ("E26 bulb T8", ["e26", "bulb", "t8"]),
        ("", []),
    ],
)
def test_analyze(text, terms):
    assert analyze(text) == terms


def test_product_and_query_spellings_meet():
    title = set(analyze("Oak Board 3/4 in. x 2 ft. x 4 ft."))

    for query in ("3/4in oak boards", '3/4" oak board', "oak 3/4 board"):
        assert set(analyze(query)) <= title, query
