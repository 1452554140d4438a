"""A Kedro dataset for the folder where the catalog's vectors are saved shard
by shard while they are encoded (see :mod:`product_search.search.shards`)."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from product_search.search.shards import ShardStore


class EmbeddingShardsDataset(AbstractDataset[ShardStore, ShardStore]):
    """The shard folder, one sub-folder per model; ``load`` returns the
    :class:`ShardStore` that the indexing nodes save each shard to as soon as
    it is encoded, and read back on a rerun. It is never saved as a whole.

    Example catalog entry::

        embedding_shards:
          type: product_search.datasets.EmbeddingShardsDataset
          path: data/07_model_output/embedding_shards
          keep_models: 4   # the shards of the 4 models used last

    Deleting the folder is always safe: it costs one encode of the catalog.
    """

    def __init__(
        self,
        *,
        path: str,
        keep_models: int = 4,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(keep_models, bool) or not isinstance(keep_models, int):
            raise DatasetError(f"keep_models must be an integer, got {keep_models!r}.")
        try:
            self._store = ShardStore(path, keep_models)
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc
        self._path = self._store.root
        self.metadata = metadata

    def load(self) -> ShardStore:
        return self._store

    def save(self, data: ShardStore) -> None:
        raise DatasetError(
            f"{self._path} is written shard by shard while the catalog is "
            "encoded (see product_search.search.encoding), never saved whole."
        )

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "keep_models": self._store.keep_models}
