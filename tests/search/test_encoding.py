"""Encoding the catalog shard by shard: a killed run resumes at the first
missing shard and builds the same table, a changed model or product is
encoded again, and the Ray backend gives the local backend's vectors."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

from product_search.errors import UserError
from product_search.search import encoding
from product_search.search.encoding import EncodingOptions, encode_catalog
from product_search.search.index import unit_vectors
from product_search.search.indexing import index_products
from product_search.search.shards import ModelShards, ShardStore, model_fingerprint
from tests import pg

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SEARCH = {"bm25": {"k1": 1.2, "b": 0.75}}


class Killed(Exception):
    """Stands for the kill of a run."""


class FakeEncoder(torch.nn.Module):
    """A tiny 'model' with weights: each text's vector is a function of its
    characters and of the weights, so another weight gives other vectors."""

    def __init__(self, model_id: str = "fake", scale: float = 1.0) -> None:
        super().__init__()
        self.model_id = model_id
        self.weight = torch.nn.Parameter(torch.full((4,), scale))

    def encode(self, sentences: list[str], **_: object) -> np.ndarray:
        raw = (
            np.array(
                [
                    [len(s), s.count("a") + 1, sum(map(ord, s)) % 97, 1]
                    for s in sentences
                ],
                dtype=np.float32,
            )
            * self.weight.detach().numpy()
        )
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)


@pytest.fixture
def params() -> dict:
    # 6 products in shards of 2: shards 0, 1 and 2.
    return {
        "batch_size": 4,
        "display_columns": ["title", "brand", "category", "price"],
        "encoding": {"shard_size": 2},
    }


@pytest.fixture
def make_dataset():
    yield from pg.dataset_factory(dimension=384)


@pytest.fixture
def encoded(monkeypatch) -> list[list[str]]:
    """The texts of each encode call, as the shards are encoded."""
    calls: list[list[str]] = []

    def spy(model, texts, batch_size, **kwargs):
        calls.append(list(texts))
        return unit_vectors(model, texts, batch_size, **kwargs)

    monkeypatch.setattr(encoding, "unit_vectors", spy)
    return calls


def kill_after(monkeypatch, shards: int) -> None:
    """The run dies right after saving its ``shards``-th shard."""
    save = ModelShards.save
    saved = []

    def save_then_die(self, shard, ids, vectors):
        path = save(self, shard, ids, vectors)
        saved.append(shard.index)
        if len(saved) == shards:
            raise Killed(f"killed after shard {shard.index}")
        return path

    monkeypatch.setattr(ModelShards, "save", save_then_die)


def test_a_killed_run_resumes_at_the_first_missing_shard_and_builds_the_same_table(
    tiny_products, base_model, params, make_dataset, tmp_path, *, monkeypatch, encoded
):
    store = ShardStore(tmp_path / "shards")
    with monkeypatch.context() as patch:
        kill_after(patch, 2)
        with pytest.raises(Killed, match="after shard 1"):
            index_products(tiny_products, base_model, params, SEARCH, shards=store)
    [folder] = store.root.iterdir()
    assert sorted(p.name[:11] for p in folder.glob("shard-*.npz")) == [
        "shard-00000", "shard-00001",
    ]  # fmt: skip
    encoded.clear()

    resumed = index_products(tiny_products, base_model, params, SEARCH, shards=store)

    # Only shard 2 (products p5 and p6) was encoded again.
    assert encoded == [tiny_products["text"].tolist()[4:]]
    uninterrupted = index_products(
        tiny_products, base_model, params, SEARCH, shards=ShardStore(tmp_path / "b")
    )
    tables = [make_dataset(), make_dataset()]
    for table, index in zip(tables, (resumed, uninterrupted), strict=True):
        table.save(index)
    first, second = (table.load().frame() for table in tables)
    assert first["product_id"].tolist() == ["p1", "p2", "p3", "p4", "p5", "p6"]
    pd.testing.assert_frame_equal(
        first.drop(columns="embedding"), second.drop(columns="embedding")
    )
    np.testing.assert_array_equal(
        np.stack(first["embedding"]), np.stack(second["embedding"])
    )
    # A rerun with nothing changed encodes nothing.
    encoded.clear()
    again = index_products(tiny_products, base_model, params, SEARCH, shards=store)
    assert encoded == []
    np.testing.assert_array_equal(
        np.stack(again.products["embedding"]), np.stack(resumed.products["embedding"])
    )


def test_a_changed_product_is_encoded_again_and_its_stale_shard_dropped(
    tmp_path, encoded
):
    store, model = ShardStore(tmp_path), FakeEncoder()
    ids = [f"p{i}" for i in range(5)]
    texts = ["red kettle", "blue pan", "green mug", "grey sofa", "tan rug"]
    options = EncodingOptions(shard_size=2)
    encode_catalog(
        model, "fake", ids, texts, batch_size=2, options=options, store=store
    )
    [folder] = store.root.iterdir()
    before = sorted(p.name for p in folder.glob("shard-*.npz"))
    encoded.clear()

    changed = [*texts[:2], "green mug, large", *texts[3:]]
    vectors = encode_catalog(
        model, "fake", ids, changed, batch_size=2, options=options, store=store
    )

    assert encoded == [["green mug, large", "grey sofa"]]  # shard 1 only
    after = sorted(p.name for p in folder.glob("shard-*.npz"))
    assert (after[0], after[2]) == (before[0], before[2])
    assert after[1] != before[1]  # the stale shard 1 is gone
    np.testing.assert_array_equal(vectors, model.encode(changed))


def test_another_model_never_reads_the_shards_of_the_first(tmp_path, encoded):
    store = ShardStore(tmp_path, keep_models=1)
    ids, texts = ["p1", "p2", "p3"], ["red kettle", "blue pan", "green mug"]
    options = EncodingOptions(shard_size=2)
    first = FakeEncoder()
    encode_catalog(
        first, "fake", ids, texts, batch_size=2, options=options, store=store
    )
    encoded.clear()

    # The same id, retrained weights: other vectors, from other shards.
    retrained = FakeEncoder(scale=2.0)
    retrained.weight.data[0] = 5.0
    vectors = encode_catalog(
        retrained, "fake", ids, texts, batch_size=2, options=options, store=store
    )

    assert encoded == [texts[:2], texts[2:]]
    np.testing.assert_array_equal(vectors, retrained.encode(texts))
    # keep_models=1: the first model's folder is dropped.
    assert [p.name for p in store.root.iterdir()] == [
        store.folder("fake", model_fingerprint(retrained, "fake")).name
    ]


def test_the_model_fingerprint_follows_id_weights_and_truncation():
    model = FakeEncoder()
    same = model_fingerprint(FakeEncoder(), "fake")
    assert model_fingerprint(model, "fake") == same
    assert model_fingerprint(model, "other") != same
    assert model_fingerprint(FakeEncoder(scale=1.5), "fake") != same
    model.max_seq_length = 64
    assert model_fingerprint(model, "fake") != same


def test_a_broken_shard_file_is_encoded_again(tmp_path, encoded):
    store, model = ShardStore(tmp_path), FakeEncoder()
    ids, texts = ["p1", "p2", "p3"], ["red kettle", "blue pan", "green mug"]
    options = EncodingOptions(shard_size=2)
    encode_catalog(
        model, "fake", ids, texts, batch_size=2, options=options, store=store
    )
    [folder] = store.root.iterdir()
    sorted(folder.glob("shard-00001-*.npz"))[0].write_bytes(b"truncated")
    encoded.clear()

    vectors = encode_catalog(
        model, "fake", ids, texts, batch_size=2, options=options, store=store
    )

    assert encoded == [texts[2:]]
    np.testing.assert_array_equal(vectors, model.encode(texts))


def test_a_small_catalog_without_a_store_is_one_encode_as_before(
    tiny_products, base_model
):
    texts = tiny_products["text"].tolist()
    vectors = encode_catalog(
        base_model, MODEL, tiny_products["product_id"].tolist(), texts, batch_size=4
    )
    np.testing.assert_array_equal(vectors, unit_vectors(base_model, texts, 4))


def test_bad_encoding_parameters_are_refused():
    with pytest.raises(UserError, match="deployment.encoding"):
        EncodingOptions.from_params({"backend": "spark"})
    with pytest.raises(UserError, match="shard_size"):
        EncodingOptions.from_params({"shard_size": 0})


def test_the_ray_backend_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    options = EncodingOptions(backend="ray")
    with pytest.raises(UserError, match=r"pip install 'product_search\[ray\]'"):
        encode_catalog(FakeEncoder(), "fake", ["p1"], ["kettle"], batch_size=1,
                       options=options)  # fmt: skip


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_with_two_workers_gives_the_local_vectors(base_model, local_ray, tmp_path):
    rng = np.random.default_rng(0)
    words = "cordless drill steel hammer oak table led bulb brass faucet".split()
    texts = [" ".join(rng.choice(words, size=4)) + f" {i}" for i in range(40)]
    ids = [f"p{i}" for i in range(40)]
    local = encode_catalog(base_model, MODEL, ids, texts, batch_size=8)
    store = ShardStore(tmp_path)
    options = EncodingOptions(
        backend="ray", shard_size=15, ray={"workers": 2, "batch_rows": 8}
    )

    on_ray = encode_catalog(
        base_model, MODEL, ids, texts, batch_size=8, options=options, store=store
    )

    np.testing.assert_allclose(on_ray, local, atol=1e-5)
    [folder] = store.root.iterdir()
    assert len(list(folder.glob("shard-*.npz"))) == 3
    assert local_ray.is_initialized()  # a Ray it did not start stays up
