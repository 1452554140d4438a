"""Settings, what the service reads from the project, and its lifespan: what
it loads on start-up and releases on shutdown, SIGTERM included."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from fastapi.testclient import TestClient
from kedro.io import DataCatalog
from kedro.io.core import Version
from pydantic import ValidationError

from product_search.datasets import CrossEncoderModelDataset
from product_search.search.table import SearchOptions, SearchTable
from product_search.service import project
from product_search.service.__main__ import main
from product_search.service.deps import Served
from product_search.service.main import create_app
from product_search.service.project import (
    project_catalog,
    search_defaults,
    serve_project,
    served_model_and_table,
    served_reranker,
)
from product_search.service.server import HTTP_PROTOCOL
from product_search.service.settings import ServiceSettings
from tests import pg
from tests.service.conftest import LIMITS, serving
from tests.service.test_http import assert_embeddings_of_texts, embed_on_one_connection

PROJECT = Path(__file__).parents[2]


def test_settings_come_from_search_environment_variables(monkeypatch):
    monkeypatch.setenv("SEARCH_MAX_K", "50")
    monkeypatch.setenv("SEARCH_ENV", "prod")

    settings = ServiceSettings(port=9001)

    assert (settings.max_k, settings.env, settings.port) == (50, "prod", 9001)


def test_default_k_above_max_k_is_refused():
    with pytest.raises(ValidationError, match=r"default_k \(10\) must not exceed"):
        ServiceSettings(max_k=5)


def test_a_queue_too_short_for_one_request_is_refused():
    with pytest.raises(ValidationError, match=r"max_queue_texts \(10\) must be at"):
        ServiceSettings(max_queue_texts=10, max_texts=64)


def test_the_uvicorn_factory_reads_its_settings_from_the_environment(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("SEARCH_PROJECT_PATH", str(tmp_path))
    monkeypatch.setenv("SEARCH_MAX_WAIT_MS", "2.5")

    settings = create_app().state.settings

    assert (settings.project_path, settings.max_wait_ms) == (tmp_path, 2.5)
    assert (settings.conf_source, settings.max_queue_texts) == (None, 1024)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "0"], "Input should be greater than or equal to 1"),
        (["--project-path", "{tmp_path}"], "Could not find the project configuration"),
    ],
)
def test_the_command_says_why_it_cannot_start(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([arg.format(tmp_path=tmp_path) for arg in argv])

    assert exit_.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("Cannot start the service: ")
    assert message in error
    assert "Traceback" not in error


# Run in a fresh interpreter: records who imports ranx, numba and scipy while
# the service's modules are imported and its app is built.
IMPORTERS = """
import importlib.abc, json, sys

WATCHED = ("ranx", "numba", "scipy")
MACHINERY = ("importlib", "_frozen_importlib", "_frozen_importlib_external")
importers = {}


class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in WATCHED:
            frame = sys._getframe(1)
            while frame is not None:
                module = frame.f_globals.get("__name__", "")
                if not module.startswith((*MACHINERY, top)):
                    importers.setdefault(top, set()).add(module)
                    break
                frame = frame.f_back
        return None


sys.meta_path.insert(0, Watch())
from product_search.service.main import create_app

create_app()
loaded = [top for top in WATCHED if top in sys.modules]
print(json.dumps({"loaded": loaded, "importers": {k: sorted(v) for k, v in importers.items()}}))
"""


def test_the_service_starts_without_the_evaluations_libraries():
    result = subprocess.run(
        [sys.executable, "-c", IMPORTERS],
        cwd=PROJECT,
        env=os.environ | {"KEDRO_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])

    # ranx (and its numba) score the review page's NDCG, imported on its
    # first use, not at start-up.
    assert "ranx" not in report["loaded"], report
    assert "numba" not in report["loaded"], report
    # sentence-transformers imports scipy itself (the served model needs it);
    # no module of the service or the project asks for scipy.
    ours = [
        module
        for modules in report["importers"].values()
        for module in modules
        if module.startswith("product_search")
    ]
    assert ours == [], report


def test_the_lifespan_loads_what_the_app_serves_and_releases_it(
    encoder, deployed_table
):
    events = []

    @contextmanager
    def load(settings: ServiceSettings):
        events.append(("load", settings.max_texts))
        yield Served(encoder, deployed_table)
        events.append("release")

    app = create_app(ServiceSettings(**LIMITS), load=load)
    assert events == []
    with TestClient(app) as client:
        assert events == [("load", 4)]
        health = client.get("/health")
        embed = client.post("/embed", json={"texts": ["pan"] * 5})
    assert events == [("load", 4), "release"]

    assert (health.status_code, health.json()["status"]) == (200, "ok")
    # The app's settings: at most 4 texts.
    assert embed.status_code == 422


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def untrained(tmp_path) -> Path:
    """A folder with the project's base configuration, where nothing has been
    trained or deployed (the catalog's paths are relative to it)."""
    shutil.copytree(PROJECT / "conf" / "base", tmp_path / "conf" / "base")
    (tmp_path / "conf" / "local").mkdir()
    return tmp_path


def test_project_without_a_fine_tuned_model_serves_the_base_model(
    untrained, monkeypatch
):
    monkeypatch.chdir(untrained)

    catalog = project_catalog(PROJECT, None, str(untrained / "conf"))
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
    # The search options of the project's parameters: the default fusion the
    # small-log benchmark chose (equal-weight min-max); SearchOptions' own
    # defaults (RRF) serve only where no project says one.
    with open(PROJECT / "conf" / "base" / "parameters_search.yml") as f:
        options = yaml.safe_load(f)["search"]["options"]
    assert search_defaults(catalog) == options
    assert SearchOptions(**options) == SearchOptions(
        fusion="weighted", dense_weight=0.5, lexical_weight=0.5
    )
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
    shipped = {"model": f"{path}@{version}", "top_n": 30, "text_columns": ["title"],
               "weight": 0.3}  # fmt: skip

    reranker = served_reranker({"reranker": shipped})

    assert reranker.describe() == shipped
    # A table version from before the weight was recorded: the reranker alone.
    older = {k: v for k, v in shipped.items() if k != "weight"}
    assert served_reranker({"reranker": older}).weight == 1.0
    pairs = [("drill", "cordless drill")]
    assert reranker.model.predict(pairs) == pytest.approx(reranker_base.predict(pairs))
    assert served_reranker({"reranker": None}) is None
    assert served_reranker(None) is None
    gone = shipped | {"model": f"{path}@2026-11-28T08.00.00.000Z"}
    assert served_reranker({"reranker": gone}) is None
    assert "/search will not rerank" in caplog.text


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        (
            ["product_search.service", "--project-path", "{project}", "--conf-source", "{conf}"],
            {},
        ),
        (
            ["uvicorn", "--factory", "product_search.service.main:create_app",
             "--http", HTTP_PROTOCOL],
            {"SEARCH_PROJECT_PATH": "{project}", "SEARCH_CONF_SOURCE": "{conf}"},
        ),
    ],
    ids=["python -m product_search.service", "uvicorn --factory"],
)  # fmt: skip
def test_sigterm_stops_the_service_and_the_embedded_database_it_started(
    command, variables, untrained, base_model
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    paths = {"project": PROJECT, "conf": untrained / "conf"}
    service = subprocess.Popen(
        [sys.executable, "-m", *(arg.format(**paths) for arg in command)]
        + ["--port", str(port)],
        cwd=untrained,
        env=os.environ
        | {"HF_HUB_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "true"}
        | {name: value.format(**paths) for name, value in variables.items()},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # However the service behaves, the test ends.
    watchdog = threading.Timer(300, service.kill)
    watchdog.start()
    output = []
    try:
        for line in service.stdout:
            output.append(line)
            if "Application startup complete" in line:
                break
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=60)
        h2c = embed_on_one_connection(port)
        pgdata = untrained / "data" / "09_database"
        users = json.loads((pgdata / ".handle_pids.json").read_text())
        service.send_signal(signal.SIGTERM)
        output += service.stdout.readlines()
        code = service.wait()
    finally:
        watchdog.cancel()
        service.kill()
    log = "".join(output)

    assert (health.status_code, health.json()["status"]) == (200, "no_table"), log
    # Nothing trained yet: the base model, said so (no_table says more).
    assert any(
        fallback.startswith("No fine-tuned model to serve")
        for fallback in health.json()["fallbacks"]
    )
    # Java's HttpClient's requests (Upgrade: h2c) answered as plain HTTP/1.1.
    assert_embeddings_of_texts(h2c, base_model)
    assert "Unsupported upgrade request" not in log
    assert users == [service.pid]
    # uvicorn shuts down gracefully, then ends with the signal it was sent.
    assert "Application shutdown complete" in log
    assert code == -signal.SIGTERM, log
    # Its last user gone, the embedded server stopped, remembering no user.
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []
    assert not (pgdata / "postmaster.pid").exists()


def test_two_workers_serve_and_stop_with_the_embedded_database(untrained, base_model):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = subprocess.Popen(
        [sys.executable, "-m", "product_search.service", "--workers", "2"]
        + ["--project-path", str(PROJECT), "--conf-source", str(untrained / "conf")]
        + ["--port", str(port)],
        cwd=untrained,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(300, service.kill)
    watchdog.start()
    output, started = [], 0
    try:
        for line in service.stdout:
            output.append(line)
            started += "Application startup complete" in line
            if started == 2:
                break
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=60)
        h2c = embed_on_one_connection(port)
        pgdata = untrained / "data" / "09_database"
        users = json.loads((pgdata / ".handle_pids.json").read_text())
        workers = {child.pid for child in psutil.Process(service.pid).children()}
        service.send_signal(signal.SIGTERM)
        output += service.stdout.readlines()
        service.wait()
    finally:
        watchdog.cancel()
        service.kill()
    log = "".join(output)

    assert (health.status_code, health.json()["status"]) == (200, "no_table"), log
    assert_embeddings_of_texts(h2c, base_model)
    # Each worker process joined the embedded server, and each left it.
    assert set(users) <= workers and len(users) == 2, (users, workers)
    assert log.count("Application shutdown complete") == 2, log
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []
    assert not (pgdata / "postmaster.pid").exists()


@pytest.mark.parametrize(
    ("shipped", "reason"),
    [
        (
            {"reason": "Not deployed: Its weight against the hybrid score is 0."},
            "Not deployed: Its weight against the hybrid score is 0.",
        ),
        # A reranker recorded with weight 0, whose model is gone: not loaded.
        (
            {"model": "/nowhere/reranker", "top_n": 50, "text_columns": ["title"],
             "weight": 0.0},
            "The table's reranker weighs 0 against the hybrid score.",
        ),
    ],
)  # fmt: skip
def test_without_a_reranker_health_says_reranker_null_and_why(
    product_index, shipped, reason, caplog, monkeypatch
):
    # Leaving the embedded server would stop the one every test shares.
    monkeypatch.setattr(project, "leave_embedded_server", lambda url: None)
    for make in pg.dataset_factory(dimension=384):
        dataset = make()
        dataset.save(dataclasses.replace(product_index, reranker=shipped))
        catalog = DataCatalog({"product_embeddings": dataset})

        with serve_project(ServiceSettings(backend="torch"), catalog) as served:
            with TestClient(serving(served)) as client:
                body = client.get("/health").json()

        assert (served.reranker, served.reranker_reason) == (None, reason)
        assert (body["reranker"], body["reranker_reason"]) == (None, reason)
        assert body["table"]["reranker"] == shipped
        assert "Cannot load" not in caplog.text
        # Switched off on purpose, not a fallback: the service is healthy.
        assert (body["status"], body["fallbacks"]) == ("ok", [])
