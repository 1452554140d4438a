"""The catalog's vectors saved shard by shard as they are encoded, so that a
killed run resumes at the first shard it had not saved.

A shard is ``shard_size`` consecutive products of the catalog. Its file is
named by its position and a fingerprint of what it holds: the model (its id,
``max_seq_length`` and weights) and the shard's product ids and texts. A
changed model or a changed product gives another name, so a stale shard is
never read back; an unchanged shard of a changed catalog is. Layout::

    <root>/<model>-<model fingerprint>/
        model.json                      the model id and its full fingerprint
        shard-00000-<fingerprint>.npz   product_id (str), embedding (float32)
        shard-00001-<fingerprint>.npz

A shard is written beside its final name and renamed, so a kill never leaves
a half-written one under that name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Changes with the layout or the meaning of a shard (e.g. how vectors are
# normalised), so that no older shard is ever read as a newer one.
SHARD_FORMAT = "product-search-shard-v1"
MODEL_FILE = "model.json"
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def model_fingerprint(model: Any, model_id: str) -> str:
    """A digest of what decides the vectors of ``model`` (named ``model_id``):
    its id, its ``max_seq_length`` (truncation), and its weights when it has
    any, so a model retrained under the same path gets another fingerprint.
    ~0.1 s for all-MiniLM-L6-v2."""
    digest = hashlib.sha256(SHARD_FORMAT.encode())
    max_length = getattr(model, "max_seq_length", None)
    digest.update(f"\0{model_id}\0{max_length}".encode())
    state = getattr(model, "state_dict", None)
    if callable(state):
        import torch  # noqa: PLC0415  (only a torch model has a state_dict)

        for name, tensor in state().items():
            digest.update(name.encode())
            data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(memoryview(data.numpy()))
    return digest.hexdigest()


@dataclass(frozen=True)
class Shard:
    """Products ``start`` to ``stop`` (excluded) of the catalog, shard number
    ``index``; ``name`` is its file's name (position and fingerprint)."""

    index: int
    start: int
    stop: int
    name: str

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_shards(
    ids: list[str], texts: list[str], shard_size: int, model: str
) -> list[Shard]:
    """The catalog cut into shards of ``shard_size`` products, each named by
    its position and the fingerprint of ``model`` (see
    :func:`model_fingerprint`) and of its products' ids and texts."""
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} product ids but {len(texts)} texts.")
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}.")
    shards = []
    for index, start in enumerate(range(0, len(ids), shard_size)):
        stop = min(start + shard_size, len(ids))
        digest = hashlib.sha256(f"{SHARD_FORMAT}\0{model}".encode())
        for product_id, text in zip(ids[start:stop], texts[start:stop], strict=True):
            digest.update(f"\x1e{product_id}\x1f{text}".encode())
        name = f"shard-{index:05d}-{digest.hexdigest()[:20]}.npz"
        shards.append(Shard(index, start, stop, name))
    return shards


class ShardStore:
    """A folder of shards (see the module's docstring), per model. Keeps the
    ``keep_models`` models used last and drops the others' shards."""

    def __init__(self, root: str | os.PathLike[str], keep_models: int = 4) -> None:
        if keep_models < 1:
            raise ValueError(f"keep_models must be at least 1, got {keep_models}.")
        self.root = Path(root)
        self.keep_models = keep_models

    def __repr__(self) -> str:
        return f"ShardStore({str(self.root)!r}, keep_models={self.keep_models})"

    def folder(self, model_id: str, fingerprint: str) -> Path:
        slug = _SLUG.sub("_", model_id.rsplit("/", 1)[-1])[-48:] or "model"
        return self.root / f"{slug}-{fingerprint[:12]}"

    def open(self, model_id: str, fingerprint: str) -> ModelShards:
        """The shards of one model, its folder made and marked as used now."""
        folder = self.folder(model_id, fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"model": model_id, "fingerprint": fingerprint, "format": SHARD_FORMAT}
        (folder / MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return ModelShards(self, folder)

    def prune_models(self, keep: Path) -> list[Path]:
        """Drop the folders of all but the ``keep_models`` models used last
        (``keep`` is kept whatever); returns those dropped."""
        folders = sorted(
            (p for p in self.root.iterdir() if (p / MODEL_FILE).is_file()),
            key=lambda p: (p / MODEL_FILE).stat().st_mtime,
            reverse=True,
        )
        dropped = [p for p in folders[self.keep_models :] if p != keep]
        for folder in dropped:
            shutil.rmtree(folder, ignore_errors=True)
        if dropped:
            logger.info(
                "Dropped the shards of %d model(s) used before the last %d: %s.",
                len(dropped), self.keep_models, ", ".join(p.name for p in dropped),
            )  # fmt: skip
        return dropped


class ModelShards:
    """One model's shards in a :class:`ShardStore`."""

    def __init__(self, store: ShardStore, folder: Path) -> None:
        self.store = store
        self.folder = folder

    def names(self) -> set[str]:
        """The names of the shards saved so far."""
        return {p.name for p in self.folder.glob("shard-*.npz")}

    def load(self, shard: Shard, ids: list[str]) -> np.ndarray | None:
        """The saved vectors of ``shard`` (whose products are ``ids``), or
        None, with a warning, when its file does not hold them."""
        path = self.folder / shard.name
        try:
            with np.load(path, allow_pickle=False) as saved:
                stored_ids, vectors = saved["product_id"].tolist(), saved["embedding"]
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("Shard %s is unreadable (%s); encoding it again.", path, exc)
            return None
        if (
            stored_ids != ids
            or vectors.ndim != 2
            or len(vectors) != shard.size
            or not np.isfinite(vectors).all()
        ):
            logger.warning(
                "Shard %s does not hold the %d vectors of its products; "
                "encoding it again.", path, shard.size,
            )  # fmt: skip
            return None
        return vectors.astype(np.float32, copy=False)

    def save(self, shard: Shard, ids: list[str], vectors: np.ndarray) -> Path:
        """Write ``shard``'s vectors beside its name, then rename it there."""
        path = self.folder / shard.name
        partial = path.with_name(
            f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial"
        )
        with open(partial, "wb") as file:
            np.savez(
                file,
                product_id=np.asarray(ids, dtype=str),
                embedding=np.asarray(vectors, dtype=np.float32),
            )
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
        return path

    def prune(self, keep: set[str]) -> list[str]:
        """Drop the shards not named in ``keep`` (a catalog's earlier
        content) and the partial files of killed runs; returns the names."""
        dropped = [
            p.name for p in self.folder.glob("shard-*.npz") if p.name not in keep
        ] + [p.name for p in self.folder.glob("*.partial") if not _writer_alive(p)]
        for name in dropped:
            (self.folder / name).unlink(missing_ok=True)
        if dropped:
            logger.info(
                "Dropped %d file(s) of an earlier catalog or a killed run from %s.",
                len(dropped), self.folder,
            )  # fmt: skip
        return dropped


def _writer_alive(partial: Path) -> bool:
    """Whether the process writing ``partial`` (its pid is in the name) runs."""
    pid = partial.name.rsplit(".", 2)[-2].split("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
