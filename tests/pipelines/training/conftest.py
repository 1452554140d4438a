"""Training data both trainings share: two queries for each of eight boxes."""

from __future__ import annotations

import pandas as pd
import pytest

MATERIALS = ["oak wood", "stainless steel", "clear glass", "organic cotton",
             "full grain leather", "recycled plastic", "bamboo", "wool"]  # fmt: skip


@pytest.fixture
def pairs() -> pd.DataFrame:
    rows = [
        (f"q{i}-{j}", template.format(m=m), f"p{i}")
        for i, m in enumerate(MATERIALS)
        for j, template in enumerate(["{m} box", "storage in {m}"])
    ]
    return pd.DataFrame(rows, columns=["query_id", "query", "product_id"])
