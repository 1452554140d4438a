"""Inputs of the evaluation pipeline on the six ``tiny_products``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).parents[3]


@pytest.fixture
def evaluation_params() -> dict:
    with open(ROOT / "conf" / "base" / "parameters_evaluation.yml") as f:
        params = yaml.safe_load(f)["evaluation"]
    return params | {
        "bootstrap_samples": 200,
        "sample_queries": [
            "waterproof boots for hiking",
            "something to keep my dog busy",
        ],
    }


@pytest.fixture
def test_queries() -> pd.DataFrame:
    """One held-out query per product."""
    rows = [
        ("p1-q0", "cast iron pan for searing steak", "p1"),
        ("p2-q1", "nonstick frying pan", "p2"),
        ("p3-q0", "waterproof leather hiking boots", "p3"),
        ("p4-q2", "lightweight running shoes", "p4"),
        ("p5-q0", "durable chew toy for dogs", "p5"),
        ("p6-q3", "noise cancelling wireless earbuds", "p6"),
    ]
    return pd.DataFrame(rows, columns=["query_id", "query", "product_id"])


@pytest.fixture
def training_history() -> dict:
    """The shape ``train_model`` writes."""
    return {
        "loss_by_step": [
            {"step": 1, "epoch": 0.5, "loss": 1.25},
            {"step": 2, "epoch": 1.0, "loss": 0.5},
        ],
        "steps": 2,
        "epochs": 1,
        "train_pairs": 18,
        "pairs_per_s": 9.0,
        "wall_time_s": 2.0,
        "train_loss": 0.875,
        "device": "cpu",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "parameters": {
            "epochs": 1,
            "batch_size": 16,
            "learning_rate": 2.0e-5,
            "warmup_ratio": 0.1,
            "max_seq_length": 64,
            "loss": "mnrl",
        },
    }


@pytest.fixture
def generated_queries(test_queries) -> pd.DataFrame:
    return test_queries.assign(
        query_type=[
            "specific",
            "general",
            "specific",
            "general",
            "need_based",
            "general",
        ],
        provider="offline",
        model="offline-templates-v1",
    )


@pytest.fixture
def data_quality() -> dict:
    """The shape ``report_data_quality`` writes."""
    return {
        "products": {
            "input_rows": 7,
            "kept_products": 6,
            "dropped": {"empty_id": 0, "empty_title": 1, "duplicate_id": 0},
        },
        "generation_failures": 0,
        "queries": {"input_queries": 24, "kept_queries": 24, "dropped": {}},
    }


@pytest.fixture
def judged_queries() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "query_id": ["r1", "r2", "r3"],
            "query": ["skillet", "shoes for jogging", "garden hose"],
        }
    )


@pytest.fixture
def relevance_judgments() -> pd.DataFrame:
    """As ``OptionalCSVDataset`` loads them: every column a string. r3 has no
    relevant product and is skipped."""
    return pd.DataFrame(
        {
            "query_id": ["r1", "r1", "r2", "r2", "r3"],
            "product_id": ["p1", "p2", "p4", "p3", "p5"],
            "relevance": ["2", "1", "2", "0", "0"],
        }
    )
