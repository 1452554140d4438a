"""A CSV dataset whose file may be absent: then it loads as an empty table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError


class OptionalCSVDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """Loads a CSV file, or an empty DataFrame with ``columns`` when the file does
    not exist. Used for inputs a user may or may not have, such as human
    relevance judgments. A file that exists but lacks a column is an error;
    without ``columns`` (the node maps the user's names) nothing is checked.
    """

    def __init__(
        self,
        *,
        filepath: str,
        columns: list[str] | None = None,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._filepath = Path(filepath)
        self._columns = list(columns or [])
        self._load_args = {"dtype": str, "keep_default_na": False, **(load_args or {})}
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        if not self._filepath.exists():
            return pd.DataFrame(
                {column: pd.Series(dtype=str) for column in self._columns}
            )
        data = pd.read_csv(self._filepath, **self._load_args)
        missing = [column for column in self._columns if column not in data.columns]
        if missing:
            raise DatasetError(
                f"{self._filepath} lacks the column(s) {missing}; "
                f"expected {self._columns}."
            )
        return data

    def save(self, data: pd.DataFrame) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        data.to_csv(self._filepath, index=False)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "columns": self._columns}
