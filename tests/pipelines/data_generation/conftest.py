"""Fixtures of the data_generation tests: the project's conf/base and its
parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONF = Path(__file__).parents[3] / "conf" / "base"


@pytest.fixture
def conf_base() -> Path:
    return CONF


@pytest.fixture
def params() -> dict:
    with open(CONF / "parameters_data_generation.yml") as f:
        loaded = yaml.safe_load(f)["data_generation"]
    loaded["provider"] = "offline"
    return loaded
