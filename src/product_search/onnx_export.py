"""Exporting a sentence-transformers model to ONNX, offline (the deployment and
the evaluation export; the service only runs the graphs, with
:mod:`product_search.search.onnx`).

The whole model is exported, pooling and normalisation included, so the ONNX
graph computes exactly what ``SentenceTransformer.encode`` does; the tokenizer
is the model's own. A ``CrossEncoder`` (the reranker) is exported the same way,
up to its logits. ``sentence-transformers[onnx]`` (optimum) does not install
beside transformers 5, hence ``torch.onnx.export`` and ``onnxruntime``
directly.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from sentence_transformers import CrossEncoder, SentenceTransformer
from transformers import PreTrainedModel

from product_search.search.onnx import OnnxExport


class _Forward(torch.nn.Module):
    """A model's forward pass from named tensors to one output: the sentence
    embedding of a ``SentenceTransformer``, the logits of a ``CrossEncoder``."""

    def __init__(self, model: SentenceTransformer | CrossEncoder, input_names: tuple[str, ...]):  # fmt: skip
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        features = dict(zip(self.input_names, inputs, strict=True))
        output = (
            "scores" if isinstance(self.model, CrossEncoder) else "sentence_embedding"
        )
        return self.model(features)[output]


@contextlib.contextmanager
def _eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """``model``'s transformers run plain (eager) attention for a while.
    Traced through PyTorch's fused attention, the graph carries the mask
    arithmetic of that path, which makes the int8 reranker slower for the
    same scores (bench/rerank.py measures it)."""
    models = [m for m in model.modules() if isinstance(m, PreTrainedModel)]
    before = [m.config._attn_implementation for m in models]
    for m in models:
        m.set_attn_implementation("eager")
    try:
        yield
    finally:
        for m, implementation in zip(models, before, strict=True):
            m.set_attn_implementation(implementation)


def export_onnx(
    model: SentenceTransformer | CrossEncoder,
    model_id: str,
    *,
    int8: bool = False,
    opset: int = 17,
) -> OnnxExport:
    """Export ``model`` (named ``model_id``), an embedding model or a
    reranker, to an fp32 ONNX graph, plus an int8 one by dynamic quantisation
    of its weights when ``int8``."""
    tokenizer = model.tokenizer
    input_names = tuple(tokenizer.model_input_names)
    reranker = isinstance(model, CrossEncoder)
    first = ["a short query", "a longer query with more words"]
    second = ["a product title", "a longer product title with more words"]
    sample = tokenizer(
        *((first, second) if reranker else (first + second,)),
        padding=True,
        return_tensors="pt",
    )
    output = "logits" if reranker else "sentence_embedding"
    module = _Forward(model, input_names).to("cpu").eval()
    buffer = io.BytesIO()
    with torch.no_grad(), _eager_attention(model), warnings.catch_warnings():
        # The tracer warns about Python branches on shapes; the graph is
        # checked against torch's outputs by the tests.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(sample[name] for name in input_names),
            buffer,
            input_names=list(input_names),
            output_names=[output],
            dynamic_axes={
                **{name: {0: "batch", 1: "sequence"} for name in input_names},
                output: {0: "batch"},
            },
            opset_version=opset,
            dynamo=False,
        )
    graphs = {"fp32": buffer.getvalue()}
    if int8:
        graphs["int8"] = _quantized(graphs["fp32"])
    if reranker:
        sigmoid = isinstance(model.activation_fn, torch.nn.Sigmoid)
        return OnnxExport(
            model_id=model_id,
            dimension=int(model.num_labels),
            max_seq_length=int(model.max_seq_length),
            input_names=input_names,
            graphs=graphs,
            tokenizer=tokenizer,
            kind="reranker",
            activation="sigmoid" if sigmoid else "identity",
        )
    return OnnxExport(
        model_id=model_id,
        dimension=int(model.get_embedding_dimension()),
        max_seq_length=int(model.max_seq_length),
        input_names=input_names,
        graphs=graphs,
        tokenizer=tokenizer,
    )


def _quantized(graph: bytes) -> bytes:
    """int8 weights, activations quantised on the fly (no calibration data)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(graph)
        # Per-channel scales keep the int8 vectors close to the fp32 ones
        # (tests/search/test_onnx.py checks the cosine); one scale per
        # tensor loses noticeably more.
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
        return target.read_bytes()
