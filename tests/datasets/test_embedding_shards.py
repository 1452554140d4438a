"""EmbeddingShardsDataset: the shard folder as a catalog entry."""

from __future__ import annotations

import pytest
from kedro.io.core import DatasetError

from product_search.datasets import EmbeddingShardsDataset
from product_search.search.shards import ShardStore


def test_load_gives_the_store_of_the_folder(tmp_path):
    dataset = EmbeddingShardsDataset(path=str(tmp_path / "shards"), keep_models=2)
    assert not dataset.exists()  # nothing encoded yet, and nothing made

    store = dataset.load()

    assert isinstance(store, ShardStore)
    assert (store.root, store.keep_models) == (tmp_path / "shards", 2)
    assert "keep_models=2" in str(dataset)


def test_it_is_never_saved_whole(tmp_path):
    dataset = EmbeddingShardsDataset(path=str(tmp_path))
    with pytest.raises(DatasetError, match="shard by shard"):
        dataset.save(dataset.load())


@pytest.mark.parametrize("keep_models", [0, "4", True])
def test_keep_models_must_be_a_positive_integer(tmp_path, keep_models):
    with pytest.raises(DatasetError, match="keep_models"):
        EmbeddingShardsDataset(path=str(tmp_path), keep_models=keep_models)
