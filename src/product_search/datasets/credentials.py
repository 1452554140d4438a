"""A read-only Kedro dataset that hands one credentials entry to a node, so that
a secret the node needs is an input of the pipeline (kedro-viz shows it) and
not something the node looks up in the environment."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError


class CredentialsDataset(AbstractDataset[None, dict[str, str]]):
    """Loads ``credentials`` without its unset (null or empty) values.

    Example catalog entry, with ``anthropic`` in ``credentials.yml``::

        anthropic_credentials:
          type: product_search.datasets.CredentialsDataset
          credentials: anthropic

    The values never appear in ``str(dataset)`` or in logs: only the names of
    the keys that are set.
    """

    def __init__(
        self,
        *,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._credentials = {
            key: str(value)
            for key, value in (credentials or {}).items()
            if value is not None and str(value).strip()
        }
        self.metadata = metadata

    def load(self) -> dict[str, str]:
        return dict(self._credentials)

    def save(self, data: None) -> None:
        raise DatasetError("Credentials are read from credentials.yml, not saved.")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"keys_set": sorted(self._credentials)}
