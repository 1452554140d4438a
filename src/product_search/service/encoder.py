"""The model behind the service: one encode at a time, concurrent requests
encoded together, off the event loop."""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np
from sentence_transformers import SentenceTransformer
from starlette.concurrency import run_in_threadpool

from product_search.datasets import model_id
from product_search.search.index import unit_vectors


class Encoder:
    """Turns texts into unit vectors with a sentence-transformers model.

    Requests that arrive while the model is busy wait in a queue and are then
    encoded in one ``model.encode`` call: on 2 CPU cores a batch of 32 short
    queries takes about as long as 6 single ones, so throughput grows with
    concurrency (bench/results/embed_service.md).
    """

    def __init__(self, model: SentenceTransformer, max_batch_texts: int = 64) -> None:
        self.model = model
        self.model_id = model_id(model)
        self.dimension = int(model.get_embedding_dimension())
        self._max_batch_texts = max_batch_texts
        self._pending: deque[tuple[list[str], asyncio.Future[np.ndarray]]] = deque()
        self._worker: asyncio.Task[None] | None = None

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode now, in the calling thread."""
        return unit_vectors(self.model, texts, self._max_batch_texts)

    async def aencode(self, texts: list[str]) -> np.ndarray:
        """Encode in a worker thread, together with other waiting requests."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, size = [], 0
            while self._pending and (
                not batch or size + len(self._pending[0][0]) <= self._max_batch_texts
            ):
                texts, future = self._pending.popleft()
                batch.append((texts, future))
                size += len(texts)
            try:
                vectors = await run_in_threadpool(
                    self.encode, [text for texts, _ in batch for text in texts]
                )
            # Whatever failed is handed to each waiting request.
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for texts, future in batch:
                # A client that went away leaves a cancelled future.
                if not future.done():
                    future.set_result(vectors[start : start + len(texts)])
                start += len(texts)
