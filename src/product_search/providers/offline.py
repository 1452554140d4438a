"""An offline query generator: no network, no model, same output every run.

It writes queries from the product's own fields, in the four styles a shopper
uses, so that the whole project runs without an API key. Queries look like the
ones in real search logs: a few words around the product's head noun ("impact
wrench", not the title's tail "tool only"), sizes as shoppers type them, and
now and then a typo or two words run together. They are still simpler than
Claude's or real ones; use them to exercise the pipeline, and Claude or real
queries to judge a model.
"""

from __future__ import annotations

import random
import re
import zlib

import pandas as pd

from product_search.errors import UserError
from product_search.providers import PROVIDER_COLUMNS

QUERY_TYPES = ("specific", "general", "need_based", "attribute_focused")
PROVIDER = "offline"
MODEL = "offline-templates-v2"

MATERIALS = (
    "stainless steel", "cast iron", "carbon steel", "aluminium", "aluminum",
    "leather", "suede", "cotton", "linen", "wool", "merino", "fleece", "polyester",
    "nylon", "mesh", "silicone", "rubber", "bamboo", "wood", "wooden", "oak",
    "walnut", "glass", "ceramic", "porcelain", "plastic", "copper", "brass",
    "titanium", "canvas", "velvet", "microfiber", "memory foam",
)  # fmt: skip
FEATURES = (
    "waterproof", "water resistant", "wireless", "bluetooth", "cordless",
    "rechargeable", "nonstick", "non-stick", "portable", "adjustable", "foldable",
    "ergonomic", "organic", "noise cancelling", "insulated", "lightweight",
    "dishwasher safe", "machine washable", "heavy duty", "handmade", "usb-c",
    "smart", "led", "non-slip", "breathable", "unscented", "vegan", "eco-friendly",
)  # fmt: skip
COLOURS = (
    "black", "white", "grey", "gray", "silver", "gold", "red", "blue", "navy",
    "green", "olive", "pink", "purple", "yellow", "orange", "brown", "beige",
    "cream", "teal",
)  # fmt: skip
SIZE_PATTERN = re.compile(
    r"\b\d+(?:\.\d+)?\s?(?:-?\s?(?:inch|in|cm|mm|m|ft|oz|ml|l|litre|liter|qt|quart|"
    r"lb|lbs|kg|g|gb|tb|w|mah|piece|pc|pack))\b",
    re.IGNORECASE,
)

# Who a need-based query is for, by words in the product's category.
NEEDS = {
    "kitchen": [
        "gift for someone who loves cooking",
        "for a small kitchen",
        "for a beginner cook",
        "for meal prep",
    ],
    "cook": ["gift for someone who loves cooking", "for a beginner cook"],
    "foot": ["for standing all day", "for long walks", "for wide feet"],
    "shoe": ["for standing all day", "for long walks"],
    "electronic": ["for working from home", "gift for a teenager", "for travel"],
    "toy": ["gift for a 5 year old", "to keep kids busy", "for a rainy day"],
    "game": ["for family game night", "gift for a 10 year old"],
    "pet": ["to keep my dog busy", "for a new puppy", "for an indoor cat"],
    "tool": ["for a first apartment", "for diy projects", "gift for a handyman"],
    "sport": ["for training at home", "for a beginner", "for the gym"],
    "outdoor": ["for a camping trip", "for hiking", "for the backyard"],
    "beauty": ["for dry skin", "gift for her", "for a self care routine"],
    "home": ["for a small apartment", "housewarming gift", "for a cosy living room"],
    "office": ["for a home office", "for working from home", "for back pain"],
    "garden": ["for a small garden", "for a balcony", "gift for a gardener"],
    "baby": ["for a newborn", "baby shower gift", "for a toddler"],
    "cloth": ["for cold weather", "for everyday wear", "gift for him"],
}
GENERIC_NEEDS = ["gift idea", "for everyday use", "for a small space", "for travel"]
NEED_TEMPLATES = ["{noun} {need}", "best {noun} {need}",
                  "{adjective} {noun} {need}"]  # fmt: skip
GENERAL_TEMPLATES = ["{noun}", "{noun}s", "{category} {noun}", "cheap {noun}",
                     "{noun} sale", "best {noun}"]  # fmt: skip
STOPWORDS = {"the", "a", "an", "and", "for", "with", "of", "in", "to", "by", "&",
             "set", "new", "pack", "inch", "pcs", "piece"}  # fmt: skip
WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")
# What is not the product itself: "(Tool Only)", "... with Steam", "... in Chrome".
ASIDE = re.compile(r"\([^)]*\)|\[[^\]]*\]")
CLAUSE_END = re.compile(
    r"[,;|–]|\s-\s|\s(?:with|for|in|by|featuring|includes?)\s(?=[a-z])", re.IGNORECASE
)
# Sizes and counts as catalogs write them: 1/2 in., 2-1/2 in., 1.9 cu. ft., 18-Volt.
MEASURE = re.compile(
    r"\b\d+(?:[-/.]\d+)*(?:/\d+)?\s?-?\s?(?:cu\.?\s?ft|sq\.?\s?ft|in|ft|oz|ml|gal|lbs?|"
    r"qt|mm|cm|kg|volt|v|watt|w|amp|a|pack|pk|piece|pc|count|ct|gauge|ga)?\b\.?",
    re.IGNORECASE,
)
TYPO_RATE = 0.15


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _head_noun(title: str, brand: str) -> str:
    """The thing a product is, in two or three words: the end of the title's
    first clause (before "with", "in", "for", a comma or an aside in
    brackets), without the brand, sizes or numbers."""
    first_clause = CLAUSE_END.split(MEASURE.sub(" ", ASIDE.sub(" ", title)), 1)[0]
    brand_words = set(_words(brand))
    words = [
        w
        for w in _words(first_clause)
        if w not in brand_words and w not in STOPWORDS and not w[0].isdigit()
    ]
    return " ".join(words[-3:]) if words else " ".join(_words(title)[:3])


def _shopper_noise(query: str, rng: random.Random) -> str:
    """Now and then a typo as shoppers make them: a letter dropped, doubled or
    swapped in a long word, or two words run together."""
    if rng.random() >= TYPO_RATE:
        return query
    words = query.split()
    long_words = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if len(words) > 1 and (not long_words or rng.random() < 0.25):
        i = rng.randrange(len(words) - 1)
        return " ".join([*words[:i], words[i] + words[i + 1], *words[i + 2 :]])
    if not long_words:
        return query
    i = rng.choice(long_words)
    word, j = words[i], rng.randrange(1, len(words[i]) - 1)
    edit = rng.choice(("drop", "double", "swap"))
    if edit == "drop":
        word = word[:j] + word[j + 1 :]
    elif edit == "double":
        word = word[:j] + word[j] + word[j:]
    else:
        word = word[: j - 1] + word[j] + word[j - 1] + word[j + 1 :]
    words[i] = word
    return " ".join(words)


def _found(text: str, vocabulary: tuple[str, ...]) -> list[str]:
    lowered = f" {text.lower()} "
    return [v for v in vocabulary if re.search(rf"\b{re.escape(v)}\b", lowered)]


def _needs(category: str) -> list[str]:
    lowered = category.lower()
    needs = [n for key, values in NEEDS.items() if key in lowered for n in values]
    return needs or GENERIC_NEEDS


def _query(product: pd.Series, query_type: str, rng: random.Random) -> str:
    title, brand = str(product["title"]), str(product.get("brand", "") or "")
    category = str(product.get("category", "") or "")
    # Category paths like "Home & Kitchen | Kitchen Utensils" end in the
    # most specific level, which is what shoppers type.
    category_leaf = category.rsplit("|", maxsplit=1)[-1].strip().lower()
    noun = _head_noun(title, brand)
    full_text = f"{title} {product.get('description', '')}"
    attributes = (
        _found(full_text, FEATURES)
        + _found(full_text, MATERIALS)
        + _found(full_text, COLOURS)
        + [m.group(0).lower() for m in SIZE_PATTERN.finditer(full_text)]
    )
    # "cordless cordless leaf blower" reads like a bug, not a shopper.
    attributes = [a for a in dict.fromkeys(attributes) if a not in noun]
    if query_type == "specific":
        model_words = [w for w in _words(title) if any(c.isdigit() for c in w)]
        parts = [brand.lower(), noun, *model_words[: rng.randint(0, 1)]]
        return " ".join(p for p in parts if p)
    if query_type == "general":
        template = rng.choice(GENERAL_TEMPLATES)
        return template.format(noun=noun, category=category_leaf or "")
    if query_type == "need_based":
        template = rng.choice(NEED_TEMPLATES)
        adjective = rng.choice(attributes) if attributes else "good"
        return template.format(noun=noun, need=rng.choice(_needs(category)),
                               adjective=adjective)  # fmt: skip
    if query_type == "attribute_focused":
        chosen = rng.sample(attributes, k=min(len(attributes), rng.randint(1, 2)))
        return " ".join([*chosen, noun]) if chosen else f"{noun} {category_leaf}"
    raise ValueError(
        f"The offline generator does not know the query type '{query_type}'; "
        f"it writes {list(QUERY_TYPES)}. Use provider 'claude' for other types."
    )


def generate_offline(
    products: pd.DataFrame, *, queries_per_product: int, query_types: list[str],
    seed: int,
) -> pd.DataFrame:  # fmt: skip
    """Write ``queries_per_product`` queries per product, cycling through
    ``query_types``. Each product's queries depend only on the seed and the
    product, so adding a product does not change the others'."""
    unknown = sorted(set(query_types) - set(QUERY_TYPES))
    if unknown:
        raise UserError(
            f"The offline generator does not know the query type(s) {unknown}; "
            f"it writes {list(QUERY_TYPES)}. Use provider 'claude' for other types."
        )
    rows = []
    for _, product in products.iterrows():
        product_id = str(product["product_id"])
        rng = random.Random(zlib.crc32(f"{seed}:{product_id}".encode()))
        for i in range(queries_per_product):
            query_type = query_types[i % len(query_types)]
            text = re.sub(r"\s+", " ", _query(product, query_type, rng)).strip()
            text = _shopper_noise(text, rng)
            rows.append((product_id, text, query_type, PROVIDER, MODEL))
    return pd.DataFrame(rows, columns=PROVIDER_COLUMNS)
