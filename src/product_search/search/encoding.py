"""Encoding a whole catalog into unit vectors, shard by shard: in this process
(``local``), or data-parallel on Ray (``ray``: one copy of the model per Ray
actor, on a CPU or a GPU each). Each shard is saved as soon as it is encoded
(:mod:`product_search.search.shards`), so a killed run resumes where it
stopped and a rerun with the same model and catalog encodes nothing.

Ray is optional (``pip install 'product_search[ray]'``) and imported only when
``encoding.backend`` is ``ray``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from product_search.errors import UserError
from product_search.search.index import TextEncoder, log_pace, unit_vectors
from product_search.search.shards import (
    Shard,
    ShardStore,
    model_fingerprint,
    plan_shards,
)

logger = logging.getLogger(__name__)


class RayOptions(BaseModel):
    """Where and how wide the ``ray`` backend encodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Actors, each holding one copy of the model.
    workers: int = Field(2, ge=1)
    # Per actor: a GPU each (1), a share of one (0.5), or none (0: CPU).
    num_gpus: float = Field(0, ge=0)
    # Per actor: the CPUs it reserves, and the torch threads it encodes with.
    num_cpus: float = Field(1, gt=0)
    # Texts per Ray batch: the unit a free actor takes next.
    batch_rows: int = Field(1024, ge=1)
    # The cluster: null starts a local Ray for the run (stopped after); "auto"
    # or "ray://host:10001" joins a running one. A Ray already started in
    # the process (ray.init) is used as it is.
    address: str | None = None
    # Where the model is saved for the actors to load: null, a temporary
    # folder of this machine; on a multi-machine cluster, a folder every
    # node reads at the same path.
    model_dir: str | None = None


class EncodingOptions(BaseModel):
    """``deployment.encoding`` in ``parameters_deployment.yml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "ray"] = "local"
    shard_size: int = Field(50_000, ge=1)
    ray: RayOptions = RayOptions()

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> EncodingOptions:
        try:
            return cls.model_validate(params or {})
        except ValidationError as exc:
            raise UserError(f"Invalid deployment.encoding parameters: {exc}") from exc


def encode_catalog(
    model: TextEncoder,
    model_id: str,
    ids: list[str],
    texts: list[str],
    *,
    batch_size: int,
    options: EncodingOptions | None = None,
    store: ShardStore | None = None,
) -> np.ndarray:
    """Unit vectors of ``texts`` (the products ``ids``), one float32 row each,
    in order. With a ``store``, each shard is read from it when an earlier run
    saved it, else encoded and saved at once; without, the shards are
    encoded in memory (one shard, the whole catalog, for a catalog under
    ``shard_size``: the vectors of a single ``model.encode``)."""
    options = options or EncodingOptions()
    if not texts:
        return unit_vectors(model, texts, batch_size)
    # Names matter only for the shards a store keeps.
    fingerprint = model_fingerprint(model, model_id) if store is not None else ""
    shards = plan_shards(ids, texts, options.shard_size, fingerprint)
    saved = store.open(model_id, fingerprint) if store is not None else None
    vectors: dict[int, np.ndarray] = {}
    if saved is not None:
        present = saved.names()
        for shard in shards:
            if shard.name in present:
                loaded = saved.load(shard, ids[shard.start : shard.stop])
                if loaded is not None:
                    vectors[shard.index] = loaded
    todo = [shard for shard in shards if shard.index not in vectors]
    logger.info(
        "Encoding %d products with %s (%s backend) in %d shard(s) of up to %d: "
        "%d saved by an earlier run%s, %d to encode%s.",
        len(texts), model_id, options.backend, len(shards), options.shard_size,
        len(vectors), f" ({_ranges(sorted(vectors))})" if vectors else "",
        len(todo), f" ({_ranges([s.index for s in todo])})" if todo else "",
    )  # fmt: skip
    started = time.perf_counter()
    if options.backend == "ray":
        encoded = encode_on_ray(model, texts, todo, batch_size, options.ray)
    else:
        encoded = _encode_locally(model, texts, todo, batch_size)
    for shard, shard_vectors in encoded:
        if saved is not None:
            saved.save(shard, ids[shard.start : shard.stop], shard_vectors)
        vectors[shard.index] = shard_vectors
        logger.info(
            "Shard %05d of %d (products %d-%d) encoded%s.",
            shard.index, len(shards), shard.start, shard.stop - 1,
            f" and saved in {saved.folder}" if saved is not None else "",
        )  # fmt: skip
    if len(todo) > 1 or (todo and options.backend == "ray"):
        log_pace(sum(s.size for s in todo), time.perf_counter() - started)
    if saved is not None:
        saved.prune({shard.name for shard in shards})
        saved.store.prune_models(keep=saved.folder)
    return np.concatenate([vectors[shard.index] for shard in shards])


def _ranges(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"shards 0-2, 5"``."""
    parts, first = [], None
    for i, index in enumerate(indexes):
        if first is None:
            first = index
        if i + 1 == len(indexes) or indexes[i + 1] != index + 1:
            parts.append(str(first) if first == index else f"{first}-{index}")
            first = None
    return "shards " + ", ".join(parts)


def _encode_locally(
    model: TextEncoder, texts: list[str], todo: list[Shard], batch_size: int
) -> Iterator[tuple[Shard, np.ndarray]]:
    for shard in todo:
        yield (
            shard,
            unit_vectors(
                model,
                texts[shard.start : shard.stop],
                batch_size,
                show_progress_bar=True,
            ),
        )


def encode_on_ray(
    model: TextEncoder,
    texts: list[str],
    todo: list[Shard],
    batch_size: int,
    options: RayOptions,
) -> Iterator[tuple[Shard, np.ndarray]]:
    """Encode the products of ``todo`` with Ray Data: ``map_batches`` over an
    actor pool of ``options.workers`` actors, each loading the model (saved to
    a folder for them) once. Each shard is yielded as soon as all its
    products are back, in whatever order the actors finish."""
    if not todo:
        return
    ray = _import_ray()
    import pandas as pd  # noqa: PLC0415

    started_here = not ray.is_initialized()
    if started_here:
        init_args: dict[str, Any] = {"address": options.address}
        if options.address is None:
            init_args |= {"include_dashboard": False}
        ray.init(**init_args, log_to_driver=False)
    try:
        logger.info(
            "Ray: %s cluster with %s; %d actor(s) of %g CPU(s) and %g GPU(s).",
            "a local" if options.address is None and started_here else "the",
            ray.cluster_resources(), options.workers, options.num_cpus,
            options.num_gpus,
        )  # fmt: skip
        with tempfile.TemporaryDirectory(
            prefix="product-search-ray-model-", dir=options.model_dir
        ) as model_dir:
            # The model's weights as they are in memory, fine-tuned or not.
            model.save(model_dir)
            positions = np.concatenate(
                [np.arange(shard.start, shard.stop) for shard in todo]
            )
            rows = pd.DataFrame(
                {"position": positions, "text": [texts[p] for p in positions]}
            )
            blocks = [
                rows.iloc[start : start + options.batch_rows]
                for start in range(0, len(rows), options.batch_rows)
            ]
            dataset = ray.data.from_pandas(blocks).map_batches(
                RayShardEncoder,
                fn_constructor_kwargs={
                    "model_path": model_dir,
                    "batch_size": batch_size,
                    "device": "cuda" if options.num_gpus > 0 else "cpu",
                    "threads": max(1, int(options.num_cpus)),
                },
                batch_size=options.batch_rows,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=options.workers),
                num_cpus=options.num_cpus,
                num_gpus=options.num_gpus,
            )
            yield from _collect_shards(
                dataset.iter_batches(batch_size=None, batch_format="numpy"),
                todo,
                len(texts),
            )
    finally:
        if started_here:
            ray.shutdown()


def _collect_shards(
    batches: Iterator[dict[str, np.ndarray]], todo: list[Shard], total: int
) -> Iterator[tuple[Shard, np.ndarray]]:
    """Each shard of ``todo``, once every one of its products came back."""
    shard_of = np.full(total, -1)
    for i, shard in enumerate(todo):
        shard_of[shard.start : shard.stop] = i
    missing = [shard.size for shard in todo]
    buffers: list[np.ndarray | None] = [None] * len(todo)
    for batch in batches:
        positions, vectors = batch["position"], np.asarray(batch["embedding"])
        for i in np.unique(shard_of[positions]):
            shard = todo[i]
            if buffers[i] is None:
                buffers[i] = np.empty((shard.size, vectors.shape[1]), np.float32)
            mine = shard_of[positions] == i
            buffers[i][positions[mine] - shard.start] = vectors[mine]
            missing[i] -= int(mine.sum())
            if missing[i] == 0:
                yield shard, buffers[i]
                buffers[i] = None
    if any(missing):
        raise RuntimeError(f"Ray returned no vectors for {sum(missing)} product(s).")


class RayShardEncoder:
    """A Ray actor's encoder: loads the model from ``model_path`` once, then
    encodes each batch of ``text`` into unit vectors next to its
    ``position``."""

    def __init__(
        self, model_path: str, batch_size: int, device: str, threads: int
    ) -> None:
        import torch  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(model_path, device=device)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = unit_vectors(self.model, batch["text"].tolist(), self.batch_size)
        return {"position": batch["position"], "embedding": vectors}


def _import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415
        import ray.data  # noqa: PLC0415
    except ImportError as exc:
        raise UserError(
            "deployment.encoding.backend is 'ray', but Ray is not installed: "
            "pip install 'product_search[ray]' (or 'ray[data]'), or set the "
            "backend to 'local'."
        ) from exc
    return ray
