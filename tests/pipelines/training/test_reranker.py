"""The reranker: a cross-encoder trained on tiny data from the real MiniLM
weights, against negatives mined from both lanes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from product_search.datasets import CrossEncoderModelDataset
from product_search.errors import UserError
from product_search.pipelines.training import nodes
from tests.pipelines.training.conftest import MATERIALS
from tests.pipelines.training.test_nodes import _epoch_mean_loss

CONF = Path(__file__).parents[3] / "conf" / "base"
BM25 = {"k1": 0.9, "b": 0.5}


@pytest.fixture
def params() -> dict:
    with open(CONF / "parameters_reranker.yml") as f:
        loaded = yaml.safe_load(f)["reranker"]
    loaded.update(text_columns=["title"], batch_size=8, device="cpu")
    loaded["negatives"].update(skip_top=0, depth=8)
    return loaded


@pytest.fixture
def products() -> pd.DataFrame:
    titles = [f"Storage box made of {m}, 20 litres" for m in MATERIALS]
    return pd.DataFrame(
        {"product_id": [f"p{i}" for i in range(len(MATERIALS))], "title": titles,
         "text": titles}
    )  # fmt: skip


def test_examples_hold_each_positive_and_negatives_that_are_never_it(
    pairs, products, base_model, params
):
    # A second positive for one query, and a logged negative for another.
    pairs = pd.concat(
        [pairs, pd.DataFrame([("q0-0", "oak wood box", "p7")], columns=pairs.columns)]
    )
    logged = pd.DataFrame({"query_id": ["q1-0"], "query": ["x"], "product_id": ["p5"]})
    params["negatives"].update(hard=2, random=1)

    examples, counts = nodes.reranker_examples(
        pairs, logged, products, model=base_model, params=params, bm25=BM25
    )

    title = dict(zip(products["product_id"], products["title"], strict=True))
    for query, group in pairs.groupby("query"):
        rows = examples[examples["query"] == query]
        positives = {title[pid] for pid in group["product_id"]}
        assert set(rows.loc[rows["label"] == 1, "text"]) == positives
        assert positives.isdisjoint(rows.loc[rows["label"] == 0, "text"])
    # 17 positives; 2 hard negatives each (8 products: always enough); one
    # random draw each, kept unless it hits a positive; the logged one.
    assert (counts["positive"], counts["hard"], counts["logged"]) == (17, 34, 1)
    assert 0 < counts["random"] <= 17
    assert len(examples) == sum(counts.values())
    assert examples["label"].sum() == 17


def test_training_lowers_the_loss_and_ranks_each_positive_first(
    pairs, products, base_model, reranker_base, params
):
    params.update(epochs=8, learning_rate=2e-4)
    negatives = pd.DataFrame(columns=["query_id", "query", "product_id"])

    model, history = nodes.train_reranker(
        pairs, negatives, products, fine_tuned_model=base_model,
        reranker_base=reranker_base, params=params, search_params={"bm25": BM25},
    )  # fmt: skip

    assert history["trained"] and history["examples"]["positive"] == 16
    assert _epoch_mean_loss(history, 8) < _epoch_mean_loss(history, 1)
    titles = products["title"].tolist()
    for query, pid in zip(pairs["query"], pairs["product_id"], strict=True):
        scores = model.predict([(query, t) for t in titles])
        assert products["product_id"].iloc[int(np.argmax(scores))] == pid, query


def test_a_switched_off_reranker_is_the_untrained_base(
    pairs, products, base_model, reranker_base, params
):
    params["enabled"] = False
    model, history = nodes.train_reranker(
        pairs, pairs[:0], products, fine_tuned_model=base_model,
        reranker_base=reranker_base, params=params, search_params={"bm25": BM25},
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

    nodes.warm_start(three_layer_reranker, fine_tuned)

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
        nodes.warm_start(three_layer_reranker, shallow)


def test_training_warm_starts_when_asked_and_stops_before_mining_on_a_misfit(
    pairs, products, params, monkeypatch, *, base_model, three_layer_reranker
):
    shallow = copy.deepcopy(base_model)
    shallow[0].model.encoder.layer = shallow[0].model.encoder.layer[:2]
    mined = []
    monkeypatch.setattr(nodes, "reranker_examples", lambda *a, **k: mined.append(1))
    params["warm_start"] = True

    with pytest.raises(UserError, match="warm_start"):
        nodes.train_reranker(
            pairs, pairs[:0], products, fine_tuned_model=shallow,
            reranker_base=three_layer_reranker, params=params,
            search_params={"bm25": BM25},
        )  # fmt: skip
    assert mined == []
