"""Training data both trainings share: two queries for each of eight boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

CONF = Path(__file__).parents[3] / "conf" / "base"
MATERIALS = ["oak wood", "stainless steel", "clear glass", "organic cotton",
             "full grain leather", "recycled plastic", "bamboo", "wool"]  # fmt: skip
NO_NEGATIVES = pd.DataFrame(columns=["query_id", "query", "product_id"])
BM25 = {"k1": 0.9, "b": 0.5}


@pytest.fixture
def pairs() -> pd.DataFrame:
    rows = [
        (f"q{i}-{j}", template.format(m=m), f"p{i}")
        for i, m in enumerate(MATERIALS)
        for j, template in enumerate(["{m} box", "storage in {m}"])
    ]
    return pd.DataFrame(rows, columns=["query_id", "query", "product_id"])


@pytest.fixture
def reranker_params() -> dict:
    """The project's reranker parameters, small enough for tiny data."""
    with open(CONF / "parameters_reranker.yml") as f:
        loaded = yaml.safe_load(f)["reranker"]
    loaded.update(text_columns=["title"], batch_size=8, device="cpu")
    loaded["negatives"].update(skip_top=0, depth=8)
    return loaded


@pytest.fixture
def products() -> pd.DataFrame:
    """One storage box for each material, its title also its text."""
    titles = [f"Storage box made of {m}, 20 litres" for m in MATERIALS]
    return pd.DataFrame(
        {"product_id": [f"p{i}" for i in range(len(MATERIALS))], "title": titles,
         "text": titles}
    )  # fmt: skip


def epoch_mean_loss(history: dict, epoch: int) -> float:
    """The mean loss of the steps of ``epoch`` (1-based)."""
    return float(np.mean([e["loss"] for e in history["loss_by_step"]
                          if epoch - 1 < e["epoch"] <= epoch]))  # fmt: skip
