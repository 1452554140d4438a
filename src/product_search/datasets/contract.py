"""A Kedro dataset that saves and loads one typed contract (a pydantic model)
as JSON, so that a node receives the model, validated, and a stale or
hand-edited file fails on load with the field that is wrong."""

from __future__ import annotations

import importlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from pydantic import BaseModel, ValidationError


def _contract_class(path: str) -> type[BaseModel]:
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DatasetError(f"No contract class '{path}': {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise DatasetError(f"'{path}' is not a pydantic model.")
    return found


class ContractDataset(AbstractDataset[BaseModel, BaseModel]):
    """One instance of ``contract`` as indented JSON, on any fsspec filesystem.

    Example catalog entry::

        release_manifest:
          type: product_search.datasets.ContractDataset
          filepath: data/08_reporting/release_manifest.json
          contract: product_search.release.ReleaseManifest
    """

    def __init__(
        self,
        *,
        filepath: str,
        contract: str,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol, **(credentials or {}))
        self._contract = _contract_class(contract)
        self._contract_path = contract
        self.metadata = metadata

    def load(self) -> BaseModel:
        try:
            with self._fs.open(str(self._filepath), "r") as file:
                data = json.load(file)
            return self._contract.model_validate(data)
        except ValidationError as exc:
            raise DatasetError(
                f"{self._filepath} is not a valid {self._contract.__name__}: {exc}"
            ) from exc

    def save(self, data: BaseModel) -> None:
        if not isinstance(data, self._contract):
            raise DatasetError(
                f"Expected a {self._contract.__name__}, got {type(data).__name__}."
            )
        if self._protocol == "file":
            Path(self._filepath).parent.mkdir(parents=True, exist_ok=True)
        with self._fs.open(str(self._filepath), "w") as file:
            file.write(data.model_dump_json(indent=2))

    def _exists(self) -> bool:
        return self._fs.exists(str(self._filepath))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "contract": self._contract_path}
