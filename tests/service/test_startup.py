"""Settings and what `python -m product_search.service` reads from the project."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml
from kedro.io.core import Version
from pydantic import ValidationError

from product_search.datasets import CrossEncoderModelDataset
from product_search.search.table import SearchOptions, SearchTable
from product_search.service.project import (
    project_catalog,
    search_defaults,
    served_model_and_table,
    served_reranker,
)
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
        model, table, info = served_model_and_table(catalog)
    finally:
        logging.getLogger("product_search.service.project").removeHandler(records)

    assert model.model_card_data.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert any("No fine-tuned model to serve" in m for m in records.messages)
    assert isinstance(table, SearchTable)
    assert (table.qualified_name, table.dimension) == ("product_embeddings", 384)
    assert info is None
    # The search options of the project's parameters, which are also the
    # defaults of SearchOptions (one set of tuned values, not two).
    with open(PROJECT / "conf" / "base" / "parameters_search.yml") as f:
        options = yaml.safe_load(f)["search"]["options"]
    assert search_defaults(catalog) == options == SearchOptions().model_dump()
    # A table version's tuned fusion replaces them; a version without one does not.
    tuned = {"fusion": "weighted", "dense_weight": 0.4, "lexical_weight": 0.6}
    assert search_defaults(catalog, {"search_options": tuned}) == tuned
    assert search_defaults(catalog, {"search_options": None}) == options


def test_search_settings_override_the_projects_options(monkeypatch):
    monkeypatch.setenv("SEARCH_RRF_K", "5")
    settings = ServiceSettings(lexical_depth=30)

    options = settings.search_options({"fusion": "rrf", "rrf_k": 60, "dense_depth": 50})

    assert (options.fusion, options.rrf_k, options.dense_depth) == ("rrf", 5, 50)
    assert (options.lexical_depth, options.ef_search) == (30, 100)
    with pytest.raises(ValidationError):
        ServiceSettings(fusion="max")


def test_the_service_loads_the_reranker_its_table_version_names(
    reranker_base, tmp_path, caplog
):
    path, version = str(tmp_path / "reranker"), "2026-11-27T08.00.00.000Z"
    CrossEncoderModelDataset(
        model_name_or_path=path, version=Version(None, version)
    ).save(reranker_base)
    shipped = {"model": f"{path}@{version}", "top_n": 30, "text_columns": ["title"]}

    reranker = served_reranker({"reranker": shipped})

    assert reranker.describe() == shipped
    pairs = [("drill", "cordless drill")]
    assert reranker.model.predict(pairs) == pytest.approx(reranker_base.predict(pairs))
    assert served_reranker({"reranker": None}) is None
    assert served_reranker(None) is None
    gone = shipped | {"model": f"{path}@2026-11-28T08.00.00.000Z"}
    assert served_reranker({"reranker": gone}) is None
    assert "/search will not rerank" in caplog.text
