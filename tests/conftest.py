"""Fixtures shared by the whole suite."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).parents[1]
logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def test_env_run() -> Path:
    """`kedro run --env=test`, all four pipelines, once per test session
    (~2 min on 2 cores): its outputs, the deployed table in the embedded
    PostgreSQL included, are under the returned folder (data/test)."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
    # The offline provider, and the embedded database under data/test.
    for name in ("ANTHROPIC_API_KEY", "KEDRO_ENV", "DATABASE_URL"):
        env.pop(name, None)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env=test"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    logger.info("kedro run --env=test: %.0f s", time.perf_counter() - started)
    return ROOT / "data" / "test"


@pytest.fixture(scope="session")
def base_model():
    """The real all-MiniLM-L6-v2, loaded once per test session (~1 s)."""
    from product_search.datasets import SentenceTransformerModelDataset  # noqa: PLC0415

    return SentenceTransformerModelDataset(
        model_name_or_path="sentence-transformers/all-MiniLM-L6-v2"
    ).load()


@pytest.fixture(scope="session")
def reranker_base():
    """MiniLM's weights as a cross-encoder with a new, untrained scoring head."""
    from product_search.datasets import CrossEncoderModelDataset  # noqa: PLC0415

    return CrossEncoderModelDataset(
        model_name_or_path="sentence-transformers/all-MiniLM-L6-v2"
    ).load()


@pytest.fixture(scope="session")
def onnx_export(base_model):
    """all-MiniLM-L6-v2 exported to ONNX, fp32 and int8 (~5 s, once)."""
    from product_search.onnx_export import export_onnx  # noqa: PLC0415

    return export_onnx(base_model, "all-MiniLM-L6-v2", int8=True)


@pytest.fixture
def tiny_products() -> pd.DataFrame:
    """Six prepared products (the output of ``prepare_products``)."""
    rows = [
        (
            "p1",
            "Cast Iron Skillet 10 inch",
            "Lodge",
            "kitchen",
            29.9,
            "Pre-seasoned cast iron pan for searing and baking.",
        ),
        (
            "p2",
            "Nonstick Frying Pan 12 inch",
            "Tefal",
            "kitchen",
            34.5,
            "Aluminium pan with a nonstick coating, oven safe to 200 C.",
        ),
        (
            "p3",
            "Waterproof Hiking Boots",
            "Merrell",
            "footwear",
            129.0,
            "Leather boots with a waterproof membrane and a grippy sole.",
        ),
        (
            "p4",
            "Running Shoes",
            "Asics",
            "footwear",
            89.0,
            "Lightweight mesh running shoes with gel cushioning.",
        ),
        (
            "p5",
            "Chew Toy for Dogs",
            "Kong",
            "pet supplies",
            12.0,
            "Durable rubber chew toy, fill it with treats to keep dogs busy.",
        ),
        (
            "p6",
            "Wireless Earbuds",
            "Sony",
            "electronics",
            149.0,
            "Noise cancelling earbuds with 8 hours of battery and a charging case.",
        ),
    ]
    df = pd.DataFrame(
        rows,
        columns=["product_id", "title", "brand", "category", "price", "description"],
    )
    df["text"] = (
        df["title"]
        + ". "
        + df["brand"]
        + ". "
        + df["category"]
        + ". "
        + df["description"]
    )
    return df
