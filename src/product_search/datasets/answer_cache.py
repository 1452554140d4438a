"""A Kedro dataset for cached LLM answers, written one by one as they arrive."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError


def write_json_atomically(file: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``file`` so that a reader, or a run killed
    halfway, sees the old file or the new one, never a part."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=file.parent, suffix=".tmp", delete=False
    ) as tmp:
        json.dump(value, tmp, ensure_ascii=False)
    os.replace(tmp.name, file)


class AnswerCache:
    """A directory of JSON files, one per answer, named by the hash of its key.

    Each answer is written atomically as soon as it arrives, so a run that
    crashes halfway loses nothing and the rerun asks only for what is missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @staticmethod
    def key(*parts: str) -> str:
        """A stable key for e.g. (model, prompt version, product text)."""
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()

    def _file(self, key: str) -> Path:
        return self.path / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        file = self._file(key)
        if not file.exists():
            return None
        return json.loads(file.read_text(encoding="utf-8"))

    def put(self, key: str, value: Any) -> None:
        write_json_atomically(self._file(key), value)

    def __len__(self) -> int:
        return sum(1 for _ in self.path.glob("*/*.json"))


class AnswerCacheDataset(AbstractDataset[AnswerCache, AnswerCache]):
    """Loads an :class:`AnswerCache` over ``path`` (created when absent).

    Nodes write through the loaded object; ``save`` only accepts a cache over
    the same directory, which keeps Kedro's lineage honest.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> AnswerCache:
        self._path.mkdir(parents=True, exist_ok=True)
        return AnswerCache(self._path)

    def save(self, data: AnswerCache) -> None:
        if Path(data.path).resolve() != self._path.resolve():
            raise DatasetError(f"Cannot save a cache of {data.path} to {self._path}.")

    def _exists(self) -> bool:
        return self._path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
