"""The one analyser of product text, for products and queries alike.

``analyze("Oak 3/4in. x 2 ft. Boards")`` gives
``["oak", "3/4", "3/4in", "2", "2ft", "3/4x2", "board"]``:

* Unicode is folded to ASCII (accents dropped) and lower-cased.
* Numbers keep their shape: ``3/4``, ``1-1/2`` (also written ``1 1/2``),
  ``2.5``; a thousands comma is dropped (``1,500`` is ``1500``).
* A number with a unit gives the number and the number with the unit's one
  spelling, however it was written: ``3/4 in``, ``3/4in``, ``3/4 inch``,
  ``3/4"`` all give ``3/4`` and ``3/4in``; ``8 ft.``, ``8'``, ``8 feet`` give
  ``8`` and ``8ft``. A shopper who leaves the unit out still matches the number.
* Sizes ``2x4``, ``2 x 4``, ``2 by 4``, ``2 in. x 4 in.`` also give ``2x4``.
* Words are stemmed with the Snowball English stemmer (``boards``, ``board``
  -> ``board``; ``lighting`` -> ``light``).
* Only a few function words are dropped (``the``, ``and``, ``for``, ``with``
  ...); ``in``, ``ft``, ``on``, ``no`` and every unit are kept.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import Stemmer

#: Recorded beside every index built with it; change it when the output changes.
ANALYZER_NAME = "product-text-v1"

# Lucene's English stop words less the ones that carry meaning in a product
# query: "in" (inches), "on" (clip-on), "no", "not", "by" (2 by 4).
STOP_WORDS = frozenset(
    "a an and are as at be but for if into is it of or such that the their then "
    "there these they this to was will with".split()
)

# Every spelling of a unit -> its one spelling in the index.
UNITS = {
    **dict.fromkeys(["in", "inch", "inches", '"', "''", "”"], "in"),
    **dict.fromkeys(["ft", "foot", "feet", "'", "’"], "ft"),
    **dict.fromkeys(["yd", "yds", "yard", "yards"], "yd"),
    **dict.fromkeys(["mm", "millimeter", "millimeters"], "mm"),
    **dict.fromkeys(["cm", "centimeter", "centimeters"], "cm"),
    **dict.fromkeys(["m", "meter", "meters", "metre", "metres"], "m"),
    **dict.fromkeys(["lb", "lbs", "pound", "pounds"], "lb"),
    **dict.fromkeys(["oz", "ounce", "ounces"], "oz"),
    **dict.fromkeys(["gal", "gallon", "gallons"], "gal"),
    **dict.fromkeys(["qt", "quart", "quarts"], "qt"),
    **dict.fromkeys(["l", "liter", "liters", "litre", "litres"], "l"),
    **dict.fromkeys(["ml", "milliliter", "milliliters"], "ml"),
    **dict.fromkeys(["v", "volt", "volts", "vac", "vdc"], "v"),
    **dict.fromkeys(["w", "watt", "watts"], "w"),
    **dict.fromkeys(["amp", "amps", "ampere", "amperes"], "amp"),
    **dict.fromkeys(["ah", "mah"], "ah"),
    **dict.fromkeys(["btu", "btus"], "btu"),
    **dict.fromkeys(["cu", "cubic"], "cu"),
    **dict.fromkeys(["sq", "square"], "sq"),
    **dict.fromkeys(["gpm"], "gpm"),
    **dict.fromkeys(["psi"], "psi"),
    **dict.fromkeys(["k", "kelvin"], "k"),
    **dict.fromkeys(["ga", "gauge", "gage"], "gauge"),
    **dict.fromkeys(["pc", "pcs", "piece", "pieces"], "pc"),
    **dict.fromkeys(["pk", "pack", "packs"], "pack"),
}
# A unit glued to a number ("3/4in", "18v"), after it ("3/4 in.") or hyphened
# ("20-volt"); it must end there, so "2 watering cans" has no unit.
_UNIT_WORDS = sorted(UNITS, key=len, reverse=True)
_NUMBER = r"\d+(?:[.,]\d+)*(?:(?:-|\s+)\d+/\d+|/\d+)?"
_TOKEN = re.compile(
    rf"(?P<number>{_NUMBER})"
    r"(?:[\s-]*(?P<unit>"
    + "|".join(re.escape(word) for word in _UNIT_WORDS)
    + r")(?![a-z0-9]))?\.?"
    r"|(?P<times>[x×*])(?=\s*\d)"
    r"|(?P<word>[a-z0-9]+)"
)
_DIMENSION_JOINERS = frozenset({"x", "×", "*", "by"})
_STEMMER = Stemmer.Stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _STEMMER.stemWord(word)


def _fold(text: str) -> str:
    """ASCII lower case, accents dropped; inch and foot marks kept."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _number(raw: str) -> str:
    """One spelling per number: ``1 1/2`` -> ``1-1/2``, ``1,500`` -> ``1500``."""
    number = re.sub(r"\s+", "-", raw)
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", number):
        number = number.replace(",", "")
    return number.replace(",", ".")


def analyze(text: str) -> list[str]:
    """The index terms of ``text``, in order (a term may repeat)."""
    if not text:
        return []
    terms: list[str] = []
    # The last measure and whether a dimension joiner ("x", "by") followed it.
    last_number: str | None = None
    joined = False
    for match in _TOKEN.finditer(_fold(text)):
        if match.group("number") is not None:
            number = _number(match.group("number"))
            unit = match.group("unit")
            terms.append(number)
            if unit:
                terms.append(number + UNITS[unit])
            if joined and last_number is not None:
                terms.append(f"{last_number}x{number}")
            last_number, joined = number, False
            continue
        if match.group("times") is not None:
            joined = last_number is not None
            continue
        word = match.group("word")
        if word in _DIMENSION_JOINERS and last_number is not None:
            joined = True
            continue
        last_number, joined = None, False
        if word in STOP_WORDS:
            continue
        terms.append(_stem(word))
    return terms
