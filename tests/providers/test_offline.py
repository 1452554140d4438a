"""The offline provider's building blocks: head nouns and shopper typos."""

from __future__ import annotations

import random

import pytest

from product_search.providers import offline


@pytest.mark.parametrize(
    ("title", "noun"),
    [
        ("Delta Vero 1-Handle Shower Only Faucet Trim Kit in Chrome (Valve Not "
         "Included)", "faucet trim kit"),
        ("Whirlpool 1.9 cu. ft. Over the Range Convection Microwave in Stainless "
         "Steel with Sensor Cooking", "range convection microwave"),
        ("Hampton Bay Wicker Patio Lounge Chair with Sky Blue Cushion",
         "patio lounge chair"),
        ("Everbilt 1 in. x 72 in. Aluminum Square Tube", "aluminum square tube"),
    ],
)  # fmt: skip
def test_offline_head_noun_is_what_the_product_is(title, noun):
    assert offline._head_noun(title, "") == noun


def test_offline_typos_are_rare_single_edits():
    query = "cordless impact wrench"
    noisy = [offline._shopper_noise(query, random.Random(seed)) for seed in range(400)]
    changed = [q for q in noisy if q != query]
    assert 0.1 < len(changed) / len(noisy) < 0.2
    for q in changed:
        joined = q.replace(" ", "") == query.replace(" ", "")
        one_edit = len(q.split()) == 3 and sum(
            a != b for a, b in zip(q.split(), query.split(), strict=True)
        ) == 1  # fmt: skip
        assert joined or one_edit, q
