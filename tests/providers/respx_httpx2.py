"""Let respx fake the Anthropic API, whose SDK sends requests with httpx2.

respx patches ``httpx``; anthropic>=2 ships its own fork, ``httpx2``, which
respx does not see. This registers a respx mocker named ``"httpx2"`` that
patches ``httpx2.Client`` the way respx's own ``"httpx"`` mocker patches
``httpx.Client``, translating requests and responses at the boundary, so
tests use ordinary respx routes: ``respx.mock(using="httpx2")``.
Only synchronous clients are covered (the provider uses ``anthropic.Anthropic``).
"""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
from respx.mocks import Mocker
from respx.models import PassThrough


class _RespxTransport(httpx2.BaseTransport):
    """An httpx2 transport that answers through the active respx routers."""

    def __init__(self, handler: Any, real: httpx2.BaseTransport) -> None:
        self._handler = handler
        self._real = real

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        fake_request = httpx.Request(
            request.method,
            str(request.url),
            headers=request.headers.raw,
            content=request.read(),
        )
        try:
            fake_response = self._handler(fake_request)
        except PassThrough:
            return self._real.handle_request(request)
        except httpx.TimeoutException as error:
            # The SDK turns only httpx2 timeouts into APITimeoutError.
            raise httpx2.ReadTimeout(str(error), request=request) from error
        except httpx.TransportError as error:
            raise httpx2.ConnectError(str(error), request=request) from error
        return httpx2.Response(
            fake_response.status_code,
            headers=list(fake_response.headers.multi_items()),
            content=fake_response.read(),
            request=request,
        )


class Httpx2Mocker(Mocker):
    name = "httpx2"
    targets = ["httpx2._client.Client"]
    target_methods = ["_transport_for_url"]

    @classmethod
    def mock(cls, spec: Any) -> Any:
        def _transport_for_url(self: httpx2.Client, *args: Any, **kwargs: Any) -> Any:
            return _RespxTransport(cls.handler, spec(self, *args, **kwargs))

        return _transport_for_url
