"""Fine-tuning the embedding model on tiny data with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import yaml

from product_search.pipelines.training import embedding, trainer
from tests.pipelines.training.conftest import (
    CONF,
    MATERIALS,
    NO_NEGATIVES,
    epoch_mean_loss,
)


@pytest.fixture
def params() -> dict:
    with open(CONF / "parameters_training.yml") as f:
        loaded = yaml.safe_load(f)["training"]
    loaded.update(epochs=1, batch_size=8, max_seq_length=32, device="cpu")
    return loaded


def test_fine_tuned_model_differs_normalised_384d_and_loss_goes_down(
    pairs, products, base_model, params
):
    params.update(epochs=3, learning_rate=1e-4)
    model, history = embedding.train_model(
        pairs, NO_NEGATIVES, products, base_model, params
    )

    query = ["oak wood box"]
    tuned = model.encode(query, normalize_embeddings=True)
    base = base_model.encode(query, normalize_embeddings=True)
    assert tuned.shape == (1, 384)
    assert np.linalg.norm(tuned) == pytest.approx(1.0, abs=1e-5)
    assert np.abs(tuned - base).max() > 1e-3
    assert model is not base_model  # the input model is left untouched
    assert history["steps"] == 6  # 16 pairs / batch 8 x 3 epochs
    assert epoch_mean_loss(history, 3) < epoch_mean_loss(history, 1)
    assert history["train_pairs"] == 16
    assert history["parameters"]["learning_rate"] == 1e-4
    assert history["pairs_per_s"] > 0


def test_training_is_reproducible(pairs, products, base_model, params):
    first, _ = embedding.train_model(pairs, NO_NEGATIVES, products, base_model, params)
    second, _ = embedding.train_model(pairs, NO_NEGATIVES, products, base_model, params)
    texts = ["bamboo box", products["text"][0]]
    np.testing.assert_allclose(first.encode(texts), second.encode(texts), atol=1e-5)


def test_cached_mnrl_trains(pairs, products, base_model, params):
    params.update(loss="cached_mnrl", batch_size=16, mini_batch_size=4)
    model, history = embedding.train_model(
        pairs, NO_NEGATIVES, products, base_model, params
    )
    assert history["steps"] == 1
    assert model.encode(["wool box"]).shape == (1, 384)


def test_matryoshka_truncated_embeddings_still_rank(
    pairs, products, base_model, params
):
    params.update(epochs=2, learning_rate=1e-4)
    params["matryoshka"] = {"enabled": True, "dims": [384, 64]}
    model, history = embedding.train_model(
        pairs, NO_NEGATIVES, products, base_model, params
    )
    assert history["steps"] == 4
    queries = model.encode(pairs["query"].tolist(), truncate_dim=64,
                           normalize_embeddings=True)  # fmt: skip
    docs = model.encode(products["text"].tolist(), truncate_dim=64,
                        normalize_embeddings=True)  # fmt: skip
    assert queries.shape[1] == 64
    top1 = (queries @ docs.T).argmax(axis=1)
    expected = pairs["product_id"].str[1:].astype(int).to_numpy()
    assert (top1 == expected).mean() >= 0.75


def test_hard_negatives_are_mined_into_the_training_set(
    pairs, products, base_model, params, monkeypatch
):
    trained_on = []

    class RecordingTrainer(embedding.SentenceTransformerTrainer):
        def __init__(self, *args, train_dataset, **kwargs):
            trained_on.append(train_dataset)
            super().__init__(*args, train_dataset=train_dataset, **kwargs)

    # What the trainer is given: the counts alone hold with mining switched off.
    monkeypatch.setattr(embedding, "SentenceTransformerTrainer", RecordingTrainer)
    params["hard_negatives"] = {"enabled": True, "num_negatives": 1, "range_min": 0,
                                "range_max": 4, "margin": 0.0}  # fmt: skip
    _, history = embedding.train_model(
        pairs, NO_NEGATIVES, products, base_model, params
    )

    [dataset] = trained_on
    # every pair got one negative: a (query, positive, negative) triplet
    assert dataset.column_names == ["anchor", "positive", "negative_1"]
    assert len(dataset) == 16
    texts = set(products["text"])
    for positive, negative in zip(
        dataset["positive"], dataset["negative_1"], strict=True
    ):
        assert negative in texts and negative != positive
    assert history["train_pairs"] == 16
    assert history["steps"] == 2


def test_no_training_pairs_is_a_clear_error(products, base_model, params):
    empty = pd.DataFrame(columns=["query_id", "query", "product_id"])
    with pytest.raises(ValueError, match="no training pairs"):
        embedding.train_model(empty, NO_NEGATIVES, products, base_model, params)


def test_over_long_texts_are_truncated_and_counted(pairs, products, base_model, params):
    products = products.assign(text=products["text"] + " word" * 40)
    params["max_seq_length"] = 16
    _, history = embedding.train_model(
        pairs, NO_NEGATIVES, products, base_model, params
    )
    assert history["pairs"]["truncated_products"] == 8


def test_unknown_loss_is_refused(pairs, products, base_model, params):
    params["loss"] = "triplet"
    with pytest.raises(ValueError, match="Unknown loss 'triplet'"):
        embedding.train_model(pairs, NO_NEGATIVES, products, base_model, params)


def _negatives(pairs: pd.DataFrame, shift: int = 1) -> pd.DataFrame:
    """For every query, the next material's product as a logged negative."""
    other = pairs["product_id"].str[1:].astype(int).add(shift) % len(MATERIALS)
    return pairs[["query_id", "query"]].assign(product_id="p" + other.astype(str))


def test_triplet_training_lowers_loss_and_pushes_the_negative_away(
    pairs, products, base_model, params
):
    params.update(epochs=3, learning_rate=1e-4)
    negatives = _negatives(pairs)
    model, history = embedding.train_model(
        pairs, negatives, products, base_model, params
    )
    assert history["triplets"] == 16
    assert epoch_mean_loss(history, 3) < epoch_mean_loss(history, 1)

    texts = products.set_index("product_id")["text"]

    def similarity(m):
        queries = m.encode(pairs["query"].tolist(), normalize_embeddings=True)
        negative = m.encode(
            negatives["product_id"].map(texts).tolist(), normalize_embeddings=True
        )
        return float((queries * negative).sum(axis=1).mean())

    assert similarity(model) < similarity(base_model) - 0.05


def test_logged_negatives_can_be_switched_off(pairs, products, base_model, params):
    params["logged_negatives"] = False
    _, history = embedding.train_model(
        pairs, _negatives(pairs), products, base_model, params
    )
    assert history["triplets"] == 0


@pytest.fixture
def two_log_lines(monkeypatch):
    monkeypatch.setattr(trainer, "LOG_LINES", 2)


@pytest.mark.usefixtures("two_log_lines")
def test_training_logs_a_few_lines_and_keeps_every_steps_loss(
    pairs, products, base_model, params, *, caplog, capsys
):
    params.update(epochs=3)

    with caplog.at_level(logging.INFO, logger=trainer.logger.name):
        _, history = embedding.train_model(
            pairs, NO_NEGATIVES, products, base_model, params
        )

    steps = [m.split()[1] for m in caplog.messages if m.startswith("step ")]
    assert steps == ["3/6", "6/6"]  # every 6 // 2 steps, and the last
    assert len(history["loss_by_step"]) == 6
    # The trainer's own print of every step's logs is gone; its bar stays.
    printed = capsys.readouterr()
    assert "'loss'" not in printed.out + printed.err
