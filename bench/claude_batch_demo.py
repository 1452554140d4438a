"""Kill a claude_batch run while it polls, resume it, rerun it: against a fake
Message Batches API on localhost (tests/providers/fake_batches.py).

1. The fake API starts in this process and holds every batch in progress.
2. A subprocess runs the provider over 200 products, 50 requests per batch:
   it submits 4 batches, saves their ids, polls; once the state file lists
   the 4 ids and each was polled, the subprocess is killed (SIGKILL).
3. The batches are let end (5 requests come back expired) and the run is
   started again: it resumes the 4 saved batches, submits none of their
   products again, and submits only the expired ones in a later batch.
4. A rerun answers every product from the cache: no request reaches the API.

    PYTHONPATH=src .venv/bin/python bench/claude_batch_demo.py

Writes bench/results/claude_batch_demo.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.providers.fake_batches

from product_search.datasets.answer_cache import AnswerCache  # noqa: E402
from product_search.providers.batch_state import (  # noqa: E402
    CUSTOM_ID,
    BatchState,
    custom_ids,
    state_path_for,
)
from product_search.providers.claude_batch import (  # noqa: E402
    generate_with_claude_batches,
)
from tests.providers.fake_batches import (  # noqa: E402
    FakeBatchesAPI,
    expired,
    good_answer,
    title_of,
)

PRODUCTS = 200
PER_BATCH = 50
EXPIRED_EVERY = 40  # every 40th product's first request expires
TYPES = ["specific", "general", "need_based", "attribute_focused"]
logger = logging.getLogger("claude_batch_demo")


def demo_products() -> pd.DataFrame:
    """200 products; every 10th id is not a valid custom_id (a slash, a space)."""
    rows = [
        (
            f"sku {i}/blue" if i % 10 == 0 else f"B0{i:08d}",
            f"Demo product {i}",
            "Acme",
            "kitchen",
            10.0 + i,
            f"The demo product number {i}.",
        )
        for i in range(PRODUCTS)
    ]
    products = pd.DataFrame(
        rows,
        columns=["product_id", "title", "brand", "category", "price", "description"],
    )
    products["text"] = products["title"] + ". " + products["description"]
    return products


def run_provider(cache: Path, url: str, poll_interval_s: float) -> tuple[Any, Any]:
    return generate_with_claude_batches(
        demo_products(),
        AnswerCache(cache),
        queries_per_product=4,
        query_types=TYPES,
        model="claude-demo-model",
        prompt_version="v1",
        max_tokens=512,
        max_retries=2,
        timeout_s=10.0,
        price_per_mtok={"input": 3.0, "output": 15.0},
        max_requests_per_batch=PER_BATCH,
        poll_interval_s=poll_interval_s,
        max_wait_s=600.0,
        retry_wait_s=0.01,
        credentials={"api_key": "test-key", "base_url": url},
    )


def answer(custom_id: str, params: dict[str, Any], attempt: int) -> dict[str, Any]:
    number = int(title_of(params).rsplit(" ", 1)[1])
    if number % EXPIRED_EVERY == 0 and attempt == 1:
        return expired()
    return good_answer(custom_id, params, attempt)


def wait_for(condition: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the killed run never reached its polling")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--worker", nargs=2, metavar=("CACHE", "URL"), help=argparse.SUPPRESS
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if args.worker:  # the run that gets killed
        run_provider(Path(args.worker[0]), args.worker[1], poll_interval_s=0.05)
        return

    with tempfile.TemporaryDirectory() as folder, FakeBatchesAPI(answer=answer) as fake:
        cache = Path(folder) / "query_cache"
        state_path = state_path_for(AnswerCache(cache))

        # 2. The first run, killed while it polls.
        fake.hold.set()
        started = time.perf_counter()
        worker = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(cache), fake.url],
            env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"},
        )
        wait_for(
            lambda: (
                state_path.exists()
                and len(BatchState(state_path).batches) == PRODUCTS // PER_BATCH
                and all(fake.calls("GET", b.id) >= 1 for b in fake.creates)
            )
        )
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        killed_s = time.perf_counter() - started
        saved = list(BatchState(state_path).batches)
        before_kill = {b.id: [r["custom_id"] for r in b.requests] for b in fake.creates}
        logger.info(
            "Killed the run (exit %d) with %d batch ids saved.",
            worker.returncode,
            len(saved),
        )

        # 3. The resumed run.
        fake.hold.clear()
        seen = len(fake.log)
        started = time.perf_counter()
        queries, failures = run_provider(cache, fake.url, poll_interval_s=0.01)
        resumed_s = time.perf_counter() - started
        resumed_log = fake.log[seen:]
        after_kill = [b for b in fake.creates if b.id not in before_kill]
        sent_after = [r["custom_id"] for b in after_kill for r in b.requests]
        expired_ids = {
            line["custom_id"]
            for b in fake.creates
            if b.id in before_kill
            for line in b.results
            if line["result"]["type"] == "expired"
        }
        # Requests submitted again although their first result was usable.
        resubmitted = [i for i in sent_after if i not in expired_ids]

        # 4. The rerun.
        seen = len(fake.log)
        rerun, _ = run_provider(cache, fake.url, poll_interval_s=0.01)
        rerun_calls = len(fake.log) - seen

    ids = custom_ids(demo_products()["product_id"].tolist())
    result = {
        "products": PRODUCTS,
        "max_requests_per_batch": PER_BATCH,
        "killed_run": {
            "batches_submitted": len(before_kill),
            "requests_submitted": sum(map(len, before_kill.values())),
            "batch_ids_saved_at_kill": len(saved),
            "exit_code": worker.returncode,
            "seconds_to_kill": round(killed_s, 2),
        },
        "resumed_run": {
            "batches_resumed": sum(
                any(path.endswith(f"/{batch_id}") for _, path, _ in resumed_log)
                for batch_id in saved
            ),
            "batch_creates": len(after_kill),
            "requests_resubmitted": len(resubmitted),
            "expired_requests_retried": len(sent_after) - len(resubmitted),
            "api_requests": len(resumed_log),
            "queries": len(queries),
            "products_with_queries": int(queries["product_id"].nunique()),
            "failures": len(failures),
            "state_file_left": state_path.exists(),
            "seconds": round(resumed_s, 2),
        },
        "rerun": {"api_requests": rerun_calls, "queries": len(rerun)},
        "custom_ids": {
            "hashed": sum(
                i != pid
                for i, pid in zip(ids, demo_products()["product_id"], strict=True)
            ),
            "all_valid": all(CUSTOM_ID.fullmatch(i) for i in ids),
            "distinct": len(set(ids)) == len(ids),
        },
    }
    assert result["resumed_run"]["requests_resubmitted"] == 0
    assert result["rerun"]["api_requests"] == 0
    print(json.dumps(result, indent=2))
    write(args.out, result)


def write(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "claude_batch_demo.json").write_text(json.dumps(result, indent=2) + "\n")
    killed, resumed, rerun = (
        result["killed_run"],
        result["resumed_run"],
        result["rerun"],
    )
    lines = [
        "# claude_batch: killed while polling, resumed, rerun",
        "",
        f"{result['products']} products, at most {result['max_requests_per_batch']} "
        "requests per batch, against the fake Message Batches API of "
        "`tests/providers/fake_batches.py` (real HTTP on localhost, through the "
        "`anthropic` SDK); every 40th product's first request comes back expired. "
        "`PYTHONPATH=src .venv/bin/python bench/claude_batch_demo.py`.",
        "",
        "| step | measure | value |",
        "|---|---|---:|",
        f"| killed run (SIGKILL while polling) | batches submitted | {killed['batches_submitted']} |",
        f"| | requests submitted | {killed['requests_submitted']} |",
        f"| | batch ids saved at the kill | {killed['batch_ids_saved_at_kill']} |",
        f"| resumed run | batches resumed | {resumed['batches_resumed']} |",
        f"| | requests resubmitted (must be 0) | {resumed['requests_resubmitted']} |",
        f"| | expired requests retried in a later batch | {resumed['expired_requests_retried']} |",
        f"| | new batches | {resumed['batch_creates']} |",
        f"| | products with queries / failures | {resumed['products_with_queries']} / {resumed['failures']} |",
        f"| | state file left | {resumed['state_file_left']} |",
        f"| rerun | API requests (must be 0) | {rerun['api_requests']} |",
        f"| | queries | {rerun['queries']} |",
        "",
        f"custom_ids: {result['custom_ids']['hashed']} product ids with a slash "
        "or a space were hashed; all are valid and distinct: "
        f"{result['custom_ids']['all_valid'] and result['custom_ids']['distinct']}.",
        "",
    ]
    (out / "claude_batch_demo.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
