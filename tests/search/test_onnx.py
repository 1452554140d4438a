"""The ONNX export of a sentence-transformers model against the model itself."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from kedro.io.core import DatasetError
from sentence_transformers import SentenceTransformer

from product_search.datasets import OnnxModelDataset, model_id
from product_search.onnx_export import export_onnx
from product_search.search.index import unit_vectors
from product_search.search.onnx import OnnxEncoder, OnnxReranker

TEXTS = [
    "cordless drill",
    "3/4 in. pvc elbow",
    "Ryobi 18V ONE+ lithium-ion cordless drill/driver kit with battery, "
    "charger and bag; " * 30,  # far beyond the 256-token limit: truncated
    "Ünïcödé café crème",
    "x",
]


def test_fp32_vectors_equal_torchs_within_1e_4(base_model, onnx_export):
    expected = unit_vectors(base_model, TEXTS, batch_size=8)

    vectors = OnnxEncoder(onnx_export, "fp32", threads=1).encode(TEXTS, batch_size=2)

    assert vectors.dtype == np.float32
    assert vectors.shape == (5, 384)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_a_text_gets_the_same_vector_alone_or_in_a_batch(onnx_export):
    encoder = OnnxEncoder(onnx_export)

    together = encoder.encode(TEXTS)
    alone = np.stack([encoder.encode(text) for text in TEXTS])

    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_without_normalising_the_vectors_are_the_graphs_own(base_model):
    # all-MiniLM-L6-v2 ends in a Normalize module; without it the model, and
    # its graph, give mean-pooled vectors, which are not of length 1.
    pooled = SentenceTransformer(modules=[base_model[0], base_model[1]])
    encoder = OnnxEncoder(export_onnx(pooled, "pooled"), threads=1)
    expected = pooled.encode(TEXTS, normalize_embeddings=False)

    raw = encoder.encode(TEXTS, batch_size=2, normalize_embeddings=False)
    unit = encoder.encode(TEXTS, batch_size=2)

    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-4)
    norms = np.linalg.norm(raw, axis=1)
    assert np.abs(norms - 1).min() > 0.1
    np.testing.assert_allclose(unit, raw / norms[:, None], atol=1e-6)
    assert raw.dtype == unit.dtype == np.float32


def test_int8_vectors_stay_close_to_fp32(onnx_export):
    fp32 = OnnxEncoder(onnx_export, "fp32").encode(TEXTS)
    int8 = OnnxEncoder(onnx_export, "int8").encode(TEXTS)

    cosines = (fp32 * int8).sum(axis=1)
    assert cosines.min() > 0.97
    assert not np.allclose(fp32, int8, atol=1e-4)  # it is another graph


def test_encoder_speaks_the_evaluations_interface(onnx_export):
    encoder = OnnxEncoder(onnx_export)

    tensor = encoder.encode_query(TEXTS[:2], convert_to_tensor=True, prompt_name=None)

    assert isinstance(tensor, torch.Tensor)
    assert tensor.shape == (2, 384)
    assert model_id(encoder) == "all-MiniLM-L6-v2"
    assert (encoder.name, encoder.variant) == ("onnx", "fp32")


def test_export_traces_plain_attention_and_leaves_the_model_as_it_was(base_model):
    transformer = base_model[0].model
    assert transformer.config._attn_implementation == "sdpa"

    graph = onnx.load_from_string(export_onnx(base_model, "m").graphs["fp32"]).graph

    # PyTorch's fused-attention path guards fully masked rows with IsNaN.
    assert "IsNaN" not in {node.op_type for node in graph.node}
    assert transformer.config._attn_implementation == "sdpa"


def test_missing_variant_is_refused(base_model):
    export = export_onnx(base_model, "m")

    assert sorted(export.graphs) == ["fp32"]
    with pytest.raises(ValueError, match="has no int8 graph"):
        OnnxEncoder(export, "int8")


def test_dataset_round_trip_keeps_graphs_tokenizer_and_source(tmp_path, onnx_export):
    dataset = OnnxModelDataset(path=str(tmp_path / "onnx_model"))
    assert not dataset.exists()

    dataset.save(onnx_export)
    loaded = dataset.load()

    assert dataset.exists()
    assert sorted(p.name for p in (tmp_path / "onnx_model").iterdir()) == [
        "model.onnx", "model_int8.onnx", "onnx_config.json", "tokenizer",
    ]  # fmt: skip
    config = json.loads((tmp_path / "onnx_model" / "onnx_config.json").read_text())
    assert config["model"] == "all-MiniLM-L6-v2"
    assert config["variants"] == ["fp32", "int8"]
    assert loaded.graphs == onnx_export.graphs
    np.testing.assert_array_equal(
        OnnxEncoder(loaded).encode(TEXTS), OnnxEncoder(onnx_export).encode(TEXTS)
    )


def test_a_new_export_replaces_the_old_one_whole(tmp_path, onnx_export):
    dataset = OnnxModelDataset(path=str(tmp_path / "onnx_model"))
    dataset.save(onnx_export)
    fp32_only = type(onnx_export)(
        **{**onnx_export.__dict__, "graphs": {"fp32": onnx_export.graphs["fp32"]}}
    )

    dataset.save(fp32_only)

    assert not (tmp_path / "onnx_model" / "model_int8.onnx").exists()
    assert not (tmp_path / "onnx_model.partial").exists()
    assert sorted(dataset.load().graphs) == ["fp32"]


def test_loading_a_missing_export_says_how_to_make_one(tmp_path):
    with pytest.raises(DatasetError, match="kedro run --pipeline deployment"):
        OnnxModelDataset(path=str(tmp_path / "nothing")).load()


PAIRS = [
    ("cordless drill", "Ryobi 18V cordless drill/driver kit"),
    ("cordless drill", "Cast iron skillet 10 inch"),
    ("3/4 in. pvc elbow", "Charlotte Pipe 3/4 in. PVC 90-degree elbow " * 20),
    ("café crème", "Ünïcödé espresso cups, set of 4"),
]


@pytest.fixture(scope="module")
def reranker_export(reranker_base):
    """The untrained cross-encoder, exported (~5 s)."""
    import copy  # noqa: PLC0415

    model = copy.deepcopy(reranker_base)
    model.max_seq_length = 32  # the long pair is truncated, as in predict
    return model, export_onnx(model, "reranker", int8=True)


def test_reranker_scores_equal_predicts_within_1e_5(reranker_export):
    model, export = reranker_export
    expected = model.predict(PAIRS, show_progress_bar=False)

    scores = OnnxReranker(export, "fp32", threads=1).predict(PAIRS, batch_size=3)

    assert (export.kind, export.activation, export.max_seq_length) == (
        "reranker", "sigmoid", 32,
    )  # fmt: skip
    assert scores.shape == (4,)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert (
        len(set(np.round(scores, 6))) == 4
    )  # an untrained head still tells them apart


def test_a_mean_pooled_shallow_reranker_exports_its_scores_too():
    from product_search.datasets import CrossEncoderModelDataset  # noqa: PLC0415

    model = CrossEncoderModelDataset(
        model_name_or_path="sentence-transformers/all-MiniLM-L6-v2",
        head={"pooling": "mean", "layers": 2},
    ).load()
    model.max_seq_length = 32
    export = export_onnx(model, "shallow", int8=False)

    scores = OnnxReranker(export, "fp32", threads=1).predict(PAIRS, batch_size=3)

    assert (export.dimension, export.activation) == (1, "sigmoid")
    np.testing.assert_allclose(
        scores, model.predict(PAIRS, show_progress_bar=False), atol=1e-5
    )


def test_int8_reranker_keeps_the_order_of_clearly_different_scores(reranker_export):
    model, export = reranker_export
    fp32 = OnnxReranker(export, "fp32").predict(PAIRS)
    int8 = OnnxReranker(export, "int8").predict(PAIRS)

    assert np.abs(int8 - fp32).max() < 0.05
    assert not np.allclose(int8, fp32, atol=1e-6)  # it is another graph
    assert OnnxReranker(export, "int8").name == "onnx-int8"


def test_an_export_serves_only_its_own_kind(onnx_export, reranker_export):
    _, export = reranker_export

    with pytest.raises(ValueError, match="is a reranker, not an embedding model"):
        OnnxEncoder(export)
    with pytest.raises(ValueError, match="is an embedding model, not a reranker"):
        OnnxReranker(onnx_export)


def test_dataset_keeps_the_reranker_beside_the_model(tmp_path, onnx_export, reranker_export):  # fmt: skip
    _, reranker = reranker_export
    dataset = OnnxModelDataset(path=str(tmp_path / "onnx_model"))

    dataset.save(dataclasses.replace(onnx_export, reranker=reranker))
    loaded = dataset.load()

    assert loaded.reranker.model_id == "reranker"
    assert loaded.reranker.graphs == reranker.graphs
    np.testing.assert_array_equal(
        OnnxReranker(loaded.reranker).predict(PAIRS),
        OnnxReranker(reranker).predict(PAIRS),
    )
    config = json.loads((tmp_path / "onnx_model" / "onnx_config.json").read_text())
    assert config["reranker"] == "reranker"

    dataset.save(onnx_export)  # a deployment without a reranker

    assert dataset.load().reranker is None
    assert not (tmp_path / "onnx_model" / "reranker").exists()
