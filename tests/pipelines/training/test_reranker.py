"""The reranker: a cross-encoder trained on tiny data from the real MiniLM
weights, against negatives mined from both lanes, and its warm start."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from product_search.datasets import CrossEncoderModelDataset
from product_search.errors import UserError
from product_search.pipelines.training import reranker
from tests.pipelines.training.conftest import BM25, epoch_mean_loss


def test_training_lowers_the_loss_and_ranks_each_positive_first(
    pairs, products, base_model, reranker_base, reranker_params
):
    reranker_params.update(epochs=8, learning_rate=2e-4)
    negatives = pd.DataFrame(columns=["query_id", "query", "product_id"])

    model, history = reranker.train_reranker(
        pairs, negatives, products, fine_tuned_model=base_model,
        reranker_base=reranker_base, params=reranker_params,
        search_params={"bm25": BM25},
    )  # fmt: skip

    assert history["trained"] and history["examples"]["positive"] == 16
    assert epoch_mean_loss(history, 8) < epoch_mean_loss(history, 1)
    titles = products["title"].tolist()
    for query, pid in zip(pairs["query"], pairs["product_id"], strict=True):
        scores = model.predict([(query, t) for t in titles])
        assert products["product_id"].iloc[int(np.argmax(scores))] == pid, query


def test_a_switched_off_reranker_is_the_untrained_base(
    pairs, products, base_model, reranker_base, reranker_params
):
    reranker_params["enabled"] = False
    model, history = reranker.train_reranker(
        pairs, pairs[:0], products, fine_tuned_model=base_model,
        reranker_base=reranker_base, params=reranker_params,
        search_params={"bm25": BM25},
    )  # fmt: skip
    assert (model, history) == (reranker_base, {"trained": False})


@pytest.fixture
def three_layer_reranker():
    """The catalog's reranker_base: MiniLM's first 3 layers and a mean head."""
    return CrossEncoderModelDataset(
        model_name_or_path="sentence-transformers/all-MiniLM-L6-v2",
        head={"pooling": "mean", "layers": 3},
    ).load()


def test_warm_start_copies_the_fine_tuned_layers_and_keeps_the_head(
    base_model, three_layer_reranker
):
    fine_tuned = copy.deepcopy(base_model)
    with torch.no_grad():  # stands for fine-tuning: every weight moves
        for weight in fine_tuned[0].model.parameters():
            weight.add_(0.5)
    head = {k: v.clone() for k, v in three_layer_reranker[2].state_dict().items()}

    reranker.warm_start(three_layer_reranker, fine_tuned)

    tuned = fine_tuned[0].model.state_dict()
    copied = three_layer_reranker[0].model.state_dict()
    assert len(three_layer_reranker[0].model.encoder.layer) == 3
    assert all(torch.equal(value, tuned[key]) for key, value in copied.items())
    kept = three_layer_reranker[2].state_dict()
    assert all(torch.equal(value, kept[key]) for key, value in head.items())


def test_warm_start_refuses_a_model_with_fewer_layers(base_model, three_layer_reranker):
    shallow = copy.deepcopy(base_model)
    shallow[0].model.encoder.layer = shallow[0].model.encoder.layer[:2]

    with pytest.raises(UserError, match=r"encoder\.layer\.2\..*warm_start: false"):
        reranker.warm_start(three_layer_reranker, shallow)


def test_training_warm_starts_when_asked_and_stops_before_mining_on_a_misfit(
    pairs, products, reranker_params, monkeypatch, *, base_model, three_layer_reranker
):
    shallow = copy.deepcopy(base_model)
    shallow[0].model.encoder.layer = shallow[0].model.encoder.layer[:2]
    mined = []
    monkeypatch.setattr(reranker, "reranker_examples", lambda *a, **k: mined.append(1))
    reranker_params["warm_start"] = True

    with pytest.raises(UserError, match="warm_start"):
        reranker.train_reranker(
            pairs, pairs[:0], products, fine_tuned_model=shallow,
            reranker_base=three_layer_reranker, params=reranker_params,
            search_params={"bm25": BM25},
        )  # fmt: skip
    assert mined == []
