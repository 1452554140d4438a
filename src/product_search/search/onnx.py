"""A sentence-transformers model exported to ONNX and run with ONNX Runtime.

On 2 CPU cores ONNX Runtime encodes a short query several times faster than
torch with the same vectors (bench/results/embed_service.md). The whole model
is exported, pooling and normalisation included, so the ONNX graph computes
exactly what ``SentenceTransformer.encode`` does; the tokenizer is the model's
own. A ``CrossEncoder`` (the reranker) is exported the same way, up to its
logits; :class:`OnnxReranker` applies its activation as ``predict`` does. ``sentence-transformers[onnx]`` (optimum) does not install beside
transformers 5, hence ``torch.onnx.export`` and ``onnxruntime`` directly.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import torch
from sentence_transformers import CrossEncoder, SentenceTransformer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

Variant = Literal["fp32", "int8"]
VARIANTS: tuple[Variant, ...] = ("fp32", "int8")
Kind = Literal["embedding", "reranker"]
_KINDS = {"embedding": "an embedding model", "reranker": "a reranker"}


@dataclass(frozen=True)
class OnnxExport:
    """An exported model: ONNX graphs by variant (``fp32``, and ``int8``
    when quantised), the tokenizer, and what the graphs expect. An embedding
    model's graph outputs its sentence embedding (``dimension`` wide); a
    reranker's its logits (one per pair), which ``activation`` (``sigmoid`` or
    ``identity``) turns into its scores. An embedding model's export may
    carry the export of the reranker that ships with it."""

    model_id: str
    dimension: int
    max_seq_length: int
    input_names: tuple[str, ...]
    graphs: dict[str, bytes]
    tokenizer: PreTrainedTokenizerBase
    kind: Kind = "embedding"
    activation: str = "identity"
    reranker: OnnxExport | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "kind": self.kind,
            "dimension": self.dimension,
            "max_seq_length": self.max_seq_length,
            "input_names": list(self.input_names),
            "activation": self.activation,
            "variants": sorted(self.graphs),
            "reranker": None if self.reranker is None else self.reranker.model_id,
        }


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
    arithmetic of that path: the int8 reranker read 50 candidates in p50 67 /
    p95 89 ms on 2 cores, traced eagerly in 52 / 74 ms, the same scores."""
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
        # Per-channel scales keep cosine to the fp32 vectors near 0.99;
        # one scale per tensor drops it to about 0.95.
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
        return target.read_bytes()


def _session(
    export: OnnxExport, variant: Variant, threads: int | None, kind: Kind
) -> ort.InferenceSession:
    """An ONNX Runtime session on one variant of ``export``, a ``kind`` model."""
    if export.kind != kind:
        raise ValueError(
            f"The ONNX export of {export.model_id} is {_KINDS[export.kind]}, "
            f"not {_KINDS[kind]}."
        )
    if variant not in export.graphs:
        raise ValueError(
            f"The ONNX export of {export.model_id} has no {variant} graph; it "
            f"has {sorted(export.graphs)}."
        )
    options = ort.SessionOptions()
    # 0 lets ONNX Runtime use one thread per core.
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    # Idle threads sleep rather than spin: on 2 cores a spinning thread
    # takes the core the event loop needs (the service answered 390
    # instead of 470 requests/s at 32 clients).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        export.graphs[variant], options, providers=["CPUExecutionProvider"]
    )


def _feeds(export: OnnxExport, *texts: list[str]) -> dict[str, np.ndarray]:
    """The graph's inputs for ``texts`` (or pairs: two lists), tokenised as
    the model tokenises them, padded to the batch's longest."""
    tokens = export.tokenizer(
        *texts,
        padding=True,
        truncation=True,
        max_length=export.max_seq_length,
        return_tensors="np",
    )
    return {name: tokens[name].astype(np.int64) for name in export.input_names}


def _by_length(
    lengths: list[int], batch_size: int, show_progress_bar: bool, desc: str
) -> Any:
    """Row indices in batches of ``batch_size``, longest first, so that little
    of a batch is padding (as ``SentenceTransformer.encode`` batches)."""
    order = np.argsort([-length for length in lengths], kind="stable")
    starts = range(0, len(lengths), batch_size)
    if show_progress_bar:
        from tqdm.auto import tqdm  # noqa: PLC0415

        starts = tqdm(starts, desc=desc)
    return (order[start : start + batch_size] for start in starts)


class OnnxEncoder:
    """Encodes texts with one variant of an :class:`OnnxExport` into unit
    vectors. It has ``encode``, ``encode_query`` and ``encode_document`` with
    ``SentenceTransformer``'s arguments, so the evaluation scores it with the
    code that scores torch models; the service uses ``encode(texts)``."""

    def __init__(
        self, export: OnnxExport, variant: Variant = "fp32", threads: int | None = None
    ) -> None:
        self.session = _session(export, variant, threads, "embedding")
        self.export = export
        self.variant = variant
        self.model_id = export.model_id
        self.dimension = export.dimension
        self.name = "onnx" if variant == "fp32" else f"onnx-{variant}"

    def _run(self, texts: list[str]) -> np.ndarray:
        feeds = _feeds(self.export, texts)
        [vectors] = self.session.run(["sentence_embedding"], feeds)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(
        self,
        texts: str | list[str],
        batch_size: int = 8,
        convert_to_tensor: bool = False,
        show_progress_bar: bool = False,
        **_: Any,
    ) -> np.ndarray | torch.Tensor:
        """Unit vectors, one row per text."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        lengths = [len(text) for text in texts]
        for rows in _by_length(
            lengths, batch_size, show_progress_bar, "Batches (ONNX)"
        ):
            vectors[rows] = self._run([texts[row] for row in rows])
        result = vectors[0] if single else vectors
        return torch.from_numpy(result) if convert_to_tensor else result

    encode_query = encode
    encode_document = encode


class OnnxReranker:
    """Scores (query, text) pairs with one variant of a reranker's
    :class:`OnnxExport`: ``predict`` with ``CrossEncoder.predict``'s
    arguments and scores (its activation over the logits), so that
    :func:`product_search.search.rerank.rerank` runs either."""

    def __init__(
        self, export: OnnxExport, variant: Variant = "fp32", threads: int | None = None
    ) -> None:
        self.session = _session(export, variant, threads, "reranker")
        self.export = export
        self.variant = variant
        self.model_id = export.model_id
        self.name = "onnx" if variant == "fp32" else f"onnx-{variant}"

    def _run(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        feeds = _feeds(self.export, [q for q, _ in pairs], [t for _, t in pairs])
        [logits] = self.session.run(["logits"], feeds)
        logits = logits[:, 0] if self.export.dimension == 1 else logits
        if self.export.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        return logits

    def predict(
        self,
        sentences: list[tuple[str, str]],
        batch_size: int = 8,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        **_: Any,
    ) -> np.ndarray | torch.Tensor:
        """One score per pair (one row of scores with several labels)."""
        pairs = [tuple(pair) for pair in sentences]
        shape = (len(pairs),) + (
            () if self.export.dimension == 1 else (self.export.dimension,)
        )
        scores = np.empty(shape, dtype=np.float32)
        lengths = [len(query) + len(text) for query, text in pairs]
        for rows in _by_length(
            lengths, batch_size, show_progress_bar, "Batches (ONNX)"
        ):
            scores[rows] = self._run([pairs[row] for row in rows])
        return scores if convert_to_numpy else torch.from_numpy(scores)
