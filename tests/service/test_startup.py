"""Settings and what `python -m product_search.service` reads from the project."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from product_search.datasets import PgVectorTableDataset
from product_search.service.project import project_catalog, served_model_and_table
from product_search.service.settings import ServiceSettings

PROJECT = Path(__file__).parents[2]


def test_settings_come_from_search_environment_variables(monkeypatch):
    monkeypatch.setenv("SEARCH_MAX_K", "50")
    monkeypatch.setenv("SEARCH_ENV", "prod")

    settings = ServiceSettings(port=9001)

    assert (settings.max_k, settings.env, settings.port) == (50, "prod", 9001)


def test_default_k_above_max_k_is_refused():
    with pytest.raises(ValidationError, match=r"default_k \(10\) must not exceed"):
        ServiceSettings(max_k=5)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_project_without_a_fine_tuned_model_serves_the_base_model(
    tmp_path, monkeypatch
):
    # The project's base configuration, run from an empty folder (the catalog's
    # paths are relative): nothing has been trained there.
    shutil.copytree(PROJECT / "conf" / "base", tmp_path / "conf" / "base")
    (tmp_path / "conf" / "local").mkdir()
    monkeypatch.chdir(tmp_path)

    catalog = project_catalog(PROJECT, None, str(tmp_path / "conf"))
    # Kedro's logging setup (above) drops earlier handlers, caplog's included.
    records = Records()
    logging.getLogger("product_search.service.project").addHandler(records)
    try:
        model, table = served_model_and_table(catalog)
    finally:
        logging.getLogger("product_search.service.project").removeHandler(records)

    assert model.model_card_data.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert any("No fine-tuned model to serve" in m for m in records.messages)
    assert isinstance(table, PgVectorTableDataset)
    assert (table.qualified_name, table.dimension) == ("product_embeddings", 384)
