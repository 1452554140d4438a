"""Fallbacks: what the service serves in place of what the project asked for.

Each one is logged when it happens and kept, with its reason, for ``/health``,
which reports the service ``degraded`` while any holds: a service that
quietly serves something else looks healthy and serves worse results.
"""

from __future__ import annotations

import logging


def fall_back(fallbacks: list[str] | None, reason: str, log: logging.Logger) -> None:
    """Log ``reason`` and keep it in ``fallbacks`` where the caller collects
    them (the service does; a benchmark that loads a part alone need not)."""
    log.warning(reason)
    if fallbacks is not None:
        fallbacks.append(reason)
