"""How uvicorn serves the app: its options, and the HTTP/1.1 protocol that
answers a request offering an upgrade (``Upgrade: h2c``) as a plain request.

Java's ``java.net.http.HttpClient`` offers HTTP/2 on every ``http://``
connection's first request with ``Upgrade: h2c``, ``Connection: Upgrade,
HTTP2-Settings`` and ``HTTP2-Settings``. uvicorn's httptools protocol serves
such a request with an empty body (httptools stops parsing at the end of an
upgrade request's headers), so /embed and /search answered 422 "Field
required" (uvicorn issue #2722). A server may ignore an upgrade offer and
answer in HTTP/1.1 (RFC 9110 section 7.8, RFC 9113 section 3.1), which is what
:class:`UpgradeIgnoringHttpToolsProtocol` does, at httptools' speed
(bench/results/embed_service_http.md).
"""

from __future__ import annotations

from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from product_search.service.settings import ServiceSettings

# What ``uvicorn --http`` takes to serve the same way:
# ``uvicorn --factory product_search.service.main:create_app --http
# product_search.service.server:UpgradeIgnoringHttpToolsProtocol``.
HTTP_PROTOCOL = "product_search.service.server:UpgradeIgnoringHttpToolsProtocol"


def uvicorn_options(settings: ServiceSettings) -> dict[str, Any]:
    """The options of ``uvicorn.run`` (or ``uvicorn.Config``) that serve
    the app as ``python -m product_search.service`` does, workers aside."""
    return {"host": settings.host, "port": settings.port, "http": HTTP_PROTOCOL}


class UpgradeIgnoringHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, except that a request offering an upgrade
    to anything but a WebSocket it serves (h2c, or a WebSocket without a
    WebSocket library) is answered as the plain HTTP/1.1 request it also is,
    body included, and the connection stays open for the next one.

    httptools reports such a request's headers, then its end before its body,
    then raises ``HttpParserUpgrade`` with where the headers ended. Each such
    request is set aside (:meth:`_should_upgrade`) until then; the request's
    head, without its ``Upgrade`` header, and the bytes after it then go to a
    fresh parser, which reads the body and whatever follows on the connection.
    ``CONNECT`` requests, whose upgrade httptools also reports, are left as
    uvicorn serves them.
    """

    def _should_upgrade(self) -> bool:
        # uvicorn asks this only while httptools reports an upgrade: from the
        # request's headers on, a request that asked for one is not served
        # from this parser.
        return self.scope["method"] != "CONNECT"

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        rest: bytes | None = data
        while rest is not None:
            rest = self._parse(rest)

    def _parse(self, data: bytes) -> bytes | None:
        """Feed ``data`` to the parser; what a fresh parser must read next
        when ``data`` holds the head of a request offering an upgrade."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade as upgrade:
            if self.scope["method"] == "CONNECT":
                self._unsupported_upgrade_warning()
            elif self._get_upgrade() == b"websocket" and self._should_upgrade_to_ws():
                self.handle_websocket_upgrade()
            else:
                head = self._head_without_upgrade()
                self.parser = httptools.HttpRequestParser(self)
                self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
                return head + data[upgrade.args[0] :]
        return None

    def _head_without_upgrade(self) -> bytes:
        """The request's head as it came, less its ``Upgrade`` header."""
        version = self.scope["http_version"].encode()
        head = [self.scope["method"].encode(), b" ", self.url, b" HTTP/", version]
        for name, value in self.headers:
            if name != b"upgrade":
                head += [b"\r\n", name, b": ", value]
        return b"".join([*head, b"\r\n\r\n"])
