"""A Kedro dataset for a model exported to ONNX (made by
product_search.onnx_export, run by product_search.search.onnx)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError
from transformers import AutoTokenizer

from product_search.search.onnx import VARIANTS, OnnxExport

CONFIG = "onnx_config.json"
# The reranker shipped with the model, exported into this sub-folder.
RERANKER = "reranker"


def _graph_file(variant: str) -> str:
    return "model.onnx" if variant == "fp32" else f"model_{variant}.onnx"


class OnnxModelDataset(AbstractDataset[OnnxExport, OnnxExport]):
    """A directory holding ``model.onnx`` (fp32), ``model_int8.onnx`` when
    quantised, the tokenizer, and ``onnx_config.json`` naming the model the
    graphs were exported from (the service serves them only in place of that
    very model); in ``reranker/``, the same for the reranker shipped with it.

    Example catalog entry::

        onnx_model:
          type: product_search.datasets.OnnxModelDataset
          path: data/06_models/onnx_model
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> OnnxExport:
        try:
            return _read(self._path)
        except (OSError, KeyError, ValueError) as exc:
            raise DatasetError(
                f"No readable ONNX export in '{self._path}': {exc}. Run "
                "`kedro run --pipeline deployment` to export the served model."
            ) from exc

    def save(self, data: OnnxExport) -> None:
        if not isinstance(data, OnnxExport):
            raise DatasetError(f"Expected an OnnxExport, got {type(data).__name__}.")
        unknown = set(data.graphs) - set(VARIANTS)
        if data.reranker is not None:
            unknown |= set(data.reranker.graphs) - set(VARIANTS)
        if unknown:
            raise DatasetError(f"Unknown ONNX variant(s) {sorted(unknown)}.")
        # Written beside the target and renamed, so that a crash never leaves a
        # half-written export where the service would look for one.
        partial = self._path.with_name(self._path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _write(partial, data)
        if data.reranker is not None:
            _write(partial / RERANKER, data.reranker)
        if self._path.exists():
            shutil.rmtree(self._path)
        partial.rename(self._path)

    def _exists(self) -> bool:
        return (self._path / CONFIG).exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(PurePosixPath(self._path))}


def _read(path: Path) -> OnnxExport:
    config = json.loads((path / CONFIG).read_text())
    graphs = {
        variant: (path / _graph_file(variant)).read_bytes()
        for variant in config["variants"]
    }
    return OnnxExport(
        model_id=config["model"],
        dimension=int(config["dimension"]),
        max_seq_length=int(config["max_seq_length"]),
        input_names=tuple(config["input_names"]),
        graphs=graphs,
        tokenizer=AutoTokenizer.from_pretrained(str(path / "tokenizer")),
        kind=config.get("kind", "embedding"),
        activation=config.get("activation", "identity"),
        reranker=_read(path / RERANKER)
        if (path / RERANKER / CONFIG).exists()
        else None,
    )


def _write(path: Path, export: OnnxExport) -> None:
    path.mkdir(parents=True)
    for variant, graph in export.graphs.items():
        (path / _graph_file(variant)).write_bytes(graph)
    export.tokenizer.save_pretrained(str(path / "tokenizer"))
    (path / CONFIG).write_text(json.dumps(export.describe(), indent=2))
