"""The optional API key (SEARCH_API_KEY), and the error answers that the
OpenAPI document names."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from product_search.service.deps import Served
from product_search.service.main import create_app
from product_search.service.settings import ServiceSettings
from tests.service.conftest import LIMITS, serving

REQUESTS = [
    ("POST", "/embed", {"texts": ["pan"]}),
    ("POST", "/search", {"query": "pan"}),
    ("POST", "/review", {"query": "pan"}),
    ("GET", "/review/queries", None),
]


@pytest.fixture
def keyed(encoder, deployed_table, monkeypatch):
    # Two keys, as while clients move from the old key to the new one.
    monkeypatch.setenv("SEARCH_API_KEY", "old-key-1234, new-key-5678")
    app = serving(Served(encoder, deployed_table), ServiceSettings(**LIMITS))
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
def test_a_key_is_required_when_one_is_configured(keyed, method, path, body):
    def send(headers=None):
        return keyed.request(method, path, json=body, headers=headers or {})

    missing = send()
    wrong = send({"Authorization": "Bearer new-key-5679"})
    basic = send({"Authorization": "Basic bmV3LWtleS01Njc4"})
    new = send({"Authorization": "Bearer new-key-5678"})
    old = send({"Authorization": "Bearer old-key-1234"})

    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        assert refused.json() == {
            "detail": "A valid API key is required: Authorization: Bearer <key>."
        }
        assert refused.headers["www-authenticate"] == "Bearer"
    assert (new.status_code, old.status_code) == (200, 200)


def test_health_stays_open_and_says_a_key_is_required(keyed):
    response = keyed.get("/health")

    assert response.status_code == 200
    assert response.json()["api_key_required"] is True
    # The page is open; the data it asks for is not.
    assert keyed.get("/").status_code == 200


def test_without_a_key_nothing_is_asked(client):
    assert client.post("/embed", json={"texts": ["pan"]}).status_code == 200
    assert client.get("/health").json()["api_key_required"] is False


def test_the_key_is_not_shown_in_the_settings(monkeypatch):
    monkeypatch.setenv("SEARCH_API_KEY", "s3cret-key")

    settings = ServiceSettings()

    assert [key.get_secret_value() for key in settings.api_key] == ["s3cret-key"]
    assert "s3cret-key" not in repr(settings)


def test_listening_beyond_localhost_without_a_key_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="product_search.service.main"):
        create_app(ServiceSettings(host="127.0.0.1"))
        create_app(ServiceSettings(host="0.0.0.0", api_key="k"))
        assert caplog.messages == []
        create_app(ServiceSettings(host="0.0.0.0"))

    assert caplog.messages == [
        "The service listens on 0.0.0.0 without an API key: anyone who reaches "
        "it can search and embed. Set SEARCH_API_KEY to require one."
    ]


def test_the_openapi_document_names_every_error_answer():
    document = create_app(ServiceSettings()).openapi()
    answers = {
        (method.upper(), path): set(operation["responses"])
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }

    assert answers == {
        ("POST", "/embed"): {"200", "401", "422", "503"},
        ("POST", "/search"): {"200", "401", "422", "503"},
        ("POST", "/review"): {"200", "401", "422", "503"},
        ("GET", "/review/queries"): {"200", "401"},
        ("GET", "/health"): {"200", "503"},
    }
    assert document["components"]["securitySchemes"] == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "SEARCH_API_KEY, where the service is configured with one.",
        }
    }
