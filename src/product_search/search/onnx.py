"""Models exported to ONNX, run with ONNX Runtime: what the service and the
evaluation run (:mod:`product_search.onnx_export` makes the exports).

On CPU, ONNX Runtime encodes a short query several times faster than torch
with the same vectors (bench/embed_service.py measures it). An embedding
model's graph computes what ``SentenceTransformer.encode`` does, pooling and
any normalisation module of the model included; a reranker's graph stops at
its logits, and :class:`OnnxReranker` applies its activation as
``CrossEncoder.predict`` does. Each runs with the model's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import onnxruntime as ort
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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
    # Idle threads sleep rather than spin: on 2 cores a spinning thread takes
    # the core the service's event loop needs, and it answers fewer requests.
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
    lengths: list[int], batch_size: int, show_progress_bar: bool
) -> Iterator[np.ndarray]:
    """Row indices in batches of ``batch_size``, longest first, so that little
    of a batch is padding (as ``SentenceTransformer.encode`` batches)."""
    order = np.argsort([-length for length in lengths], kind="stable")
    starts: Any = range(0, len(lengths), batch_size)
    if show_progress_bar:
        from tqdm.auto import tqdm  # noqa: PLC0415

        starts = tqdm(starts, desc="Batches (ONNX)")
    return (order[start : start + batch_size] for start in starts)


class _OnnxModel:
    """A session on one variant of an export of the subclass's ``kind``, and
    the loop that runs its graph over batches of inputs of similar length."""

    kind: ClassVar[Kind]
    output: ClassVar[str]

    def __init__(
        self, export: OnnxExport, variant: Variant = "fp32", threads: int | None = None
    ) -> None:
        self.session = _session(export, variant, threads, self.kind)
        self.export = export
        self.variant = variant
        self.model_id = export.model_id
        self.name = "onnx" if variant == "fp32" else f"onnx-{variant}"

    def _outputs(
        self, rows: Sequence[tuple[str, ...]], batch_size: int, show_progress_bar: bool
    ) -> np.ndarray:
        """The graph's output for each row (one text, or a (query, text) pair),
        ``export.dimension`` wide, in the order of ``rows``."""
        outputs = np.empty((len(rows), self.export.dimension), dtype=np.float32)
        lengths = [sum(len(text) for text in row) for row in rows]
        for batch in _by_length(lengths, batch_size, show_progress_bar):
            columns = zip(*(rows[index] for index in batch), strict=True)
            feeds = _feeds(self.export, *(list(column) for column in columns))
            [output] = self.session.run([self.output], feeds)
            outputs[batch] = output
        return outputs


class OnnxEncoder(_OnnxModel):
    """Encodes texts with one variant of an embedding model's
    :class:`OnnxExport`. It has ``encode``, ``encode_query`` and
    ``encode_document`` with ``SentenceTransformer``'s arguments, so the
    evaluation scores it with the code that scores torch models; the service
    uses ``encode(texts)``."""

    kind = "embedding"
    output = "sentence_embedding"

    def __init__(
        self, export: OnnxExport, variant: Variant = "fp32", threads: int | None = None
    ) -> None:
        super().__init__(export, variant, threads)
        self.dimension = export.dimension

    def encode(
        self,
        texts: str | list[str],
        batch_size: int = 8,
        convert_to_tensor: bool = False,
        show_progress_bar: bool = False,
        normalize_embeddings: bool = True,
        **_: Any,
    ) -> np.ndarray | torch.Tensor:
        """One embedding per text: unit vectors, unless
        ``normalize_embeddings`` is False, which gives what the graph outputs,
        as ``SentenceTransformer.encode`` does (unit vectors all the same for
        a model that ends in a normalisation module, as all-MiniLM-L6-v2
        does). True by default, unlike there: the service and the table want
        unit vectors."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        vectors = self._outputs([(text,) for text in texts], batch_size, show_progress_bar)  # fmt: skip
        if normalize_embeddings:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        result = vectors[0] if single else vectors
        return torch.from_numpy(result) if convert_to_tensor else result

    encode_query = encode
    encode_document = encode


class OnnxReranker(_OnnxModel):
    """Scores (query, text) pairs with one variant of a reranker's
    :class:`OnnxExport`: ``predict`` with ``CrossEncoder.predict``'s
    arguments and scores (its activation over the logits), so that
    :func:`product_search.search.rerank.rerank` runs either."""

    kind = "reranker"
    output = "logits"

    def predict(
        self,
        sentences: list[tuple[str, str]],
        batch_size: int = 8,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        **_: Any,
    ) -> np.ndarray | torch.Tensor:
        """One score per pair (one row of scores with several labels)."""
        pairs = [(query, text) for query, text in sentences]
        scores = self._outputs(pairs, batch_size, show_progress_bar)
        if self.export.dimension == 1:
            scores = scores[:, 0]
        if self.export.activation == "sigmoid":
            scores = (1.0 / (1.0 + np.exp(-scores))).astype(np.float32)
        return scores if convert_to_numpy else torch.from_numpy(scores)
