"""The batcher: concurrent requests encoded together by the real model, each
with the vectors it gets alone, within a bounded queue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from product_search.service.encoder import Encoder, QueueFullError
from tests.service.conftest import Gated, Recording, queued

REQUESTS = [
    ["cast iron pan"],
    ["hiking boots", "waterproof leather boots with a grippy sole for long walks"],
    ["chew toy"],
    ["running shoes with gel cushioning", "pan", "a nonstick frying pan, oven safe"],
]


async def gathered(encoder: Encoder, requests: list[list[str]], **kwargs):
    return await asyncio.gather(*(encoder.aencode(r) for r in requests), **kwargs)


def test_concurrent_requests_are_encoded_together_with_the_vectors_of_each_alone(
    torch_backend,
):
    backend = Recording(torch_backend)
    encoder = Encoder(backend)

    results = asyncio.run(gathered(encoder, REQUESTS))

    # All were waiting when the model became free: one call.
    assert backend.calls == [[text for request in REQUESTS for text in request]]
    for request, vectors in zip(REQUESTS, results, strict=True):
        assert vectors.shape == (len(request), 384)
        np.testing.assert_allclose(vectors, torch_backend.encode(request), atol=1e-6)


def test_a_batch_holds_at_most_max_batch_texts_unless_one_request_is_larger(
    torch_backend,
):
    backend = Recording(torch_backend)
    encoder = Encoder(backend, max_batch_texts=3)

    asyncio.run(gathered(encoder, REQUESTS))

    # 1 + 2 texts fill a batch; 1 + 3 do not fit one, and 3 is a batch alone.
    assert [len(call) for call in backend.calls] == [3, 1, 3]


def test_an_idle_batcher_waits_max_wait_ms_for_more_requests_until_the_batch_is_full(
    torch_backend,
):
    async def one_then_three(encoder: Encoder) -> None:
        first = await queued(encoder, ["pan"])
        # Long enough for the batcher to start encoding if it did not wait.
        for _ in range(5):
            await asyncio.sleep(0)
        await asyncio.gather(first, encoder.aencode(["boots", "toy", "shoes"]))

    at_once, waiting = Recording(torch_backend), Recording(torch_backend)
    asyncio.run(one_then_three(Encoder(at_once)))
    # A whole minute to wait, but the batch is full after the second request.
    asyncio.run(one_then_three(Encoder(waiting, max_batch_texts=4, max_wait_ms=60_000)))

    assert at_once.calls == [["pan"], ["boots", "toy", "shoes"]]
    assert waiting.calls == [["pan", "boots", "toy", "shoes"]]


class Poisoned(Recording):
    """Fails any call that holds the text "poison"."""

    def encode(self, texts: list[str]) -> np.ndarray:
        if "poison" in texts:
            self.calls.append(list(texts))
            raise ValueError("cannot encode poison")
        return super().encode(texts)


def test_a_failing_request_does_not_fail_the_others_in_its_batch(torch_backend):
    backend = Poisoned(torch_backend)
    encoder = Encoder(backend)
    requests = [["pan"], ["poison", "boots"], ["toy"]]

    pan, poison, toy = asyncio.run(gathered(encoder, requests, return_exceptions=True))

    assert isinstance(poison, ValueError)
    np.testing.assert_allclose(pan, torch_backend.encode(["pan"]), atol=1e-6)
    np.testing.assert_allclose(toy, torch_backend.encode(["toy"]), atol=1e-6)
    # The batch failed, then each request was encoded alone.
    assert backend.calls == [["pan", "poison", "boots", "toy"], *requests]


def test_requests_whose_clients_went_away_leave_the_worker_running(torch_backend):
    backend = Gated(torch_backend)
    encoder = Encoder(backend)

    async def two_leave() -> np.ndarray:
        encoding = await queued(encoder, ["under way"])
        await asyncio.to_thread(backend.started.wait)
        leaving, staying = (
            await queued(encoder, ["leaving"]),
            await queued(encoder, ["staying"]),
        )
        # One gone while the model encodes it, one while it waits.
        encoding.cancel()
        leaving.cancel()
        backend.gate.set()
        vectors = await staying
        assert encoder.queued_texts == 0
        # The worker still serves.
        return np.vstack([vectors, await encoder.aencode(["later"])])

    vectors = asyncio.run(two_leave())

    assert backend.calls == [["under way"], ["staying"], ["later"]]
    np.testing.assert_allclose(
        vectors, torch_backend.encode(["staying", "later"]), atol=1e-6
    )


def test_a_request_past_max_queue_texts_is_refused_at_once(torch_backend):
    backend = Gated(torch_backend)
    encoder = Encoder(backend, max_queue_texts=3)

    async def fill() -> None:
        encoding = await queued(encoder, ["under way"])
        await asyncio.to_thread(backend.started.wait)
        waiting = await queued(encoder, ["a", "b"])
        with pytest.raises(QueueFullError, match="2 texts are waiting") as refused:
            await encoder.aencode(["c", "d"])
        assert refused.value.retry_after >= 1
        # One more text still fits.
        fits = await queued(encoder, ["c"])
        assert encoder.queued_texts == 3
        backend.gate.set()
        await asyncio.gather(encoding, waiting, fits)

    asyncio.run(fill())

    assert backend.calls == [["under way"], ["a", "b", "c"]]
    assert encoder.queued_texts == 0
