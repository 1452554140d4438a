"""The model behind the service: a backend that turns texts into unit vectors,
and the batcher that feeds it concurrent requests, one encode at a time, off
the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from typing import Protocol

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from product_search.datasets import model_id
from product_search.search.index import unit_vectors
from product_search.search.onnx import OnnxEncoder, OnnxExport
from product_search.service.fallbacks import fall_back
from product_search.service.settings import ServiceSettings

logger = logging.getLogger(__name__)


class Backend(Protocol):
    """What encodes: ``encode`` gives float32 unit vectors, one row per text."""

    name: str
    model_id: str
    dimension: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class TorchBackend:
    """A sentence-transformers model run by PyTorch."""

    name = "torch"

    def __init__(self, model: SentenceTransformer, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self.model_id = model_id(model)
        self.dimension = int(model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        return unit_vectors(self.model, texts, self.batch_size)


def build_backend(
    settings: ServiceSettings,
    model: SentenceTransformer,
    export: OnnxExport | None,
    fallbacks: list[str] | None = None,
) -> Backend:
    """The backend the service encodes with: the one place that picks it.
    ``export`` is the deployment's ONNX export, if there is one; it serves
    only for the model it was exported from. An export of another model is
    refused where ONNX is asked for, and a fallback to PyTorch (kept in
    ``fallbacks``) where ``auto`` would have used it."""
    if settings.threads is not None:
        # The reranker runs in torch whatever the backend.
        torch.set_num_threads(settings.threads)
    served = model_id(model)
    if settings.backend == "torch":
        return TorchBackend(model, settings.max_batch_texts)
    if export is not None and export.model_id == served:
        return OnnxEncoder(export, settings.onnx_variant, settings.threads)
    if export is None:
        missing = f"There is no ONNX export of {served}"
    else:
        missing = f"The ONNX export is of {export.model_id}, not of the served {served}"
    if settings.backend == "onnx":
        raise RuntimeError(
            f"SEARCH_BACKEND=onnx: {missing}. Run `kedro run --pipeline "
            "deployment`, or set SEARCH_BACKEND=auto."
        )
    if export is not None:
        fall_back(
            fallbacks,
            f"{missing}; encoding in PyTorch. Rerun the deployment pipeline to "
            "export it.",
            logger,
        )
    return TorchBackend(model, settings.max_batch_texts)


class QueueFullError(Exception):
    """Too many texts wait to be encoded; the request was not queued."""

    def __init__(self, queued: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"{queued} texts are waiting to be encoded; the limit is {limit} "
            f"(SEARCH_MAX_QUEUE_TEXTS). Retry in {retry_after} s."
        )
        self.retry_after = retry_after


Pending = tuple[list[str], asyncio.Future[np.ndarray]]


class Encoder:
    """Encodes requests with ``backend``, gathering concurrent ones into one
    ``backend.encode`` call.

    On 2 CPU cores a batch of 32 short queries takes about as long as 6 single
    ones, so throughput grows with concurrency (bench/results/embed_service.md).
    An idle batcher encodes a request at once (``max_wait_ms`` 0) or waits that
    long for others to join it; requests that arrive while a batch is being
    encoded form the next one, up to ``max_batch_texts`` texts. At most
    ``max_queue_texts`` texts wait: past that a request fails at once with
    :class:`QueueFullError`, so that an overloaded service sheds load instead
    of answering every request late.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_batch_texts: int = 64,
        max_wait_ms: float = 0.0,
        max_queue_texts: int = 1024,
    ) -> None:
        self.backend = backend
        self.max_batch_texts = max_batch_texts
        self.max_wait_ms = max_wait_ms
        self.max_queue_texts = max_queue_texts
        self.queued_texts = 0
        self._pending: deque[Pending] = deque()
        self._seconds_per_text = 0.0
        # Callers of encode() share the model with the batcher's thread.
        self._lock = threading.Lock()
        self._worker: asyncio.Task[None] | None = None
        self._batch_full: asyncio.Event | None = None

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def dimension(self) -> int:
        return self.backend.dimension

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode now, in the calling thread, after any encode under way."""
        with self._lock:
            return self.backend.encode(texts)

    async def aencode(self, texts: list[str]) -> np.ndarray:
        """Encode in a worker thread, together with other waiting requests."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        if self.queued_texts + len(texts) > self.max_queue_texts:
            # The texts ahead, at the pace of the last batch.
            wait = self.queued_texts * self._seconds_per_text
            raise QueueFullError(
                self.queued_texts, self.max_queue_texts, max(1, math.ceil(wait))
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future))
        self.queued_texts += len(texts)
        if self._batch_full is not None and self.queued_texts >= self.max_batch_texts:
            self._batch_full.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        if self.max_wait_ms > 0 and self.queued_texts < self.max_batch_texts:
            self._batch_full = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), self.max_wait_ms / 1000)
            self._batch_full = None
        while self._pending:
            await self._encode(self._next_batch())

    def _next_batch(self) -> list[Pending]:
        batch: list[Pending] = []
        size = 0
        while self._pending and (
            not batch or size + len(self._pending[0][0]) <= self.max_batch_texts
        ):
            texts, future = self._pending.popleft()
            self.queued_texts -= len(texts)
            # A client that went away leaves a cancelled future: nothing to encode.
            if not future.done():
                batch.append((texts, future))
                size += len(texts)
        return batch

    async def _encode(self, batch: list[Pending]) -> None:
        if not batch:
            return
        texts = [text for request, _ in batch for text in request]
        started = time.perf_counter()
        try:
            vectors = await asyncio.to_thread(self.encode, texts)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            # One bad request must not fail the others: each is encoded alone.
            for request in batch:
                if not request[1].done():
                    await self._encode([request])
            return
        self._seconds_per_text = (time.perf_counter() - started) / len(texts)
        start = 0
        for request, future in batch:
            _settle(future, vectors[start : start + len(request)])
            start += len(request)


def _settle(future: asyncio.Future[np.ndarray], result: np.ndarray | Exception) -> None:
    # A cancelled future (its client went away) takes no result.
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
