"""A local fake of the Anthropic Messages API, for the Claude provider tests."""

from __future__ import annotations

import anthropic
import pytest
import respx

from product_search.datasets.answer_cache import AnswerCache
from tests.providers import respx_httpx2  # noqa: F401  (registers using="httpx2")

API = "https://api.anthropic.com"


@pytest.fixture
def claude_api(monkeypatch):
    """respx routes for api.anthropic.com; anything unrouted fails the test."""
    # Keep a developer's real settings out of the fake's way.
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with respx.mock(base_url=API, using="httpx2", assert_all_called=False) as router:
        yield router


@pytest.fixture
def claude_client() -> anthropic.Anthropic:
    """A client as the provider builds one, with a fake key."""
    return anthropic.Anthropic(api_key="test-key", base_url=API, max_retries=0)


@pytest.fixture
def cache(tmp_path) -> AnswerCache:
    return AnswerCache(tmp_path / "query_cache")
