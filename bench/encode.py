"""Encoding a catalog: the pace of each backend, and what resuming a killed
run saves.

1. Products: ``--products`` texts (100,000 by default) made by recombining
   real Home Depot titles (../shared/data/home-depot-search-relevance): the
   first half of one title's words, then the second half of another's, with
   a fixed seed. Titles only: a catalog whose texts carry descriptions is
   several times slower per text (up to all-MiniLM-L6-v2's 256 tokens).
2. Throughput, texts/s, on all of them, with the base model:
   - ``torch``: ``encode_catalog`` in this process (SentenceTransformer, the
     project's batch size, torch's threads: one per core);
   - ``onnx_int8``: the service's ``OnnxEncoder`` over the int8 graph of
     ``export_onnx`` (what the deployment exports), the same threads;
   - ``ray``: ``encode_catalog`` with ``backend: ray``, ``--ray-workers``
     actors of one CPU each on a local Ray (``ray.init(num_cpus=cores)``);
     its time counts the actors' start (each loads the model), not
     ``ray.init``, which is given apart.
   Each backend's vectors are compared with torch's.
3. Resume: ``python bench/encode.py --worker`` encodes the products in
   ``--shards`` shards into a fresh shard folder (torch, in a subprocess),
   once uninterrupted, then once killed (SIGKILL) when half the shards are
   saved and run again: the rerun's wall time against the uninterrupted
   run's, and the shards it read back instead of encoding. Wall times
   include each subprocess's start (Python, torch, the model: given apart).

    .venv/bin/python bench/encode.py [--products 100000] [--shards 10]
        [--ray-workers 2] [--skip BACKEND ...]

Writes bench/results/encode.{json,md}.
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

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
HOME_DEPOT = (
    ROOT.parent / "shared" / "data" / "home-depot-search-relevance" / "train.csv"
)
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SEED = 0

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
logger = logging.getLogger("bench.encode")


def synthetic_products(count: int, seed: int = SEED) -> pd.DataFrame:
    """``count`` products whose text joins the first half of one real title
    and the second half of another."""
    titles = (
        pd.read_csv(HOME_DEPOT, encoding="latin-1", usecols=["product_title"])
        ["product_title"].drop_duplicates().str.split().tolist()
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    first, second = rng.integers(len(titles), size=(2, count))
    texts = [
        " ".join(titles[a][: (len(titles[a]) + 1) // 2] + titles[b][len(titles[b]) // 2 :])
        for a, b in zip(first, second, strict=True)
    ]  # fmt: skip
    return pd.DataFrame(
        {"product_id": [f"s{i:06d}" for i in range(count)], "text": texts}
    )


def load_model() -> Any:
    from product_search.datasets import SentenceTransformerModelDataset  # noqa: PLC0415

    return SentenceTransformerModelDataset(model_name_or_path=BASE_MODEL).load()


def batch_size() -> int:
    import yaml  # noqa: PLC0415

    with open(ROOT / "conf" / "base" / "parameters_deployment.yml") as f:
        return int(yaml.safe_load(f)["deployment"]["batch_size"])


# ---------------------------------------------------------------- the worker


def worker(args: argparse.Namespace) -> None:
    """One sharded encode into ``--store`` (resumed if shards are there);
    its figures go to ``--result`` as JSON."""
    started = time.perf_counter()
    from product_search.datasets import model_id  # noqa: PLC0415
    from product_search.search.encoding import (  # noqa: PLC0415
        EncodingOptions,
        encode_catalog,
    )
    from product_search.search.shards import ModelShards, ShardStore  # noqa: PLC0415

    model = load_model()
    products = synthetic_products(args.products)
    saved: list[int] = []
    save = ModelShards.save

    def counted(self, shard, ids, vectors):  # every shard it encodes is saved
        saved.append(shard.index)
        return save(self, shard, ids, vectors)

    ModelShards.save = counted
    ready = time.perf_counter()
    shard_size = -(-args.products // args.shards)
    encode_catalog(
        model, model_id(model), products["product_id"].tolist(),
        products["text"].tolist(), batch_size=batch_size(),
        options=EncodingOptions(shard_size=shard_size), store=ShardStore(args.store),
    )  # fmt: skip
    done = time.perf_counter()
    result = {
        "start_seconds": ready - started,
        "encode_seconds": done - ready,
        "shards": args.shards,
        "encoded": saved,
        "read_back": args.shards - len(saved),
    }
    Path(args.result).write_text(json.dumps(result))


def run_worker(
    products: int, shards: int, store: Path, kill_at: int | None = None
) -> dict[str, Any]:
    """A worker in a subprocess: its wall time and figures, or, with
    ``kill_at``, killed once that many shards are saved."""
    result = store.parent / f"result-{time.monotonic_ns()}.json"
    command = [
        sys.executable, __file__, "--worker", "--products", str(products),
        "--shards", str(shards), "--store", str(store), "--result", str(result),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if kill_at is not None:
        while process.poll() is None:
            if len(list(store.glob("*/shard-*.npz"))) >= kill_at:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    saved = len(list(store.glob("*/shard-*.npz")))
    if kill_at is not None:
        return {"killed_after_seconds": seconds, "shards_saved": saved}
    if process.returncode != 0:
        raise SystemExit(f"The worker failed:\n{stderr.decode()[-3000:]}")
    return {"wall_seconds": seconds, **json.loads(result.read_text())}


def resume(products: int, shards: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as scratch:
        root = Path(scratch)
        full = run_worker(products, shards, root / "uninterrupted" / "shards")
        logger.info("Uninterrupted: %s", full)
        killed = run_worker(
            products, shards, root / "killed" / "shards", kill_at=shards // 2
        )
        logger.info("Killed: %s", killed)
        rerun = run_worker(products, shards, root / "killed" / "shards")
        logger.info("Rerun: %s", rerun)
    return {"uninterrupted": full, "killed": killed, "rerun": rerun}


# ---------------------------------------------------------------- throughput


def throughput(
    products: pd.DataFrame, backends: list[str], ray_workers: int
) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    from product_search.datasets import model_id  # noqa: PLC0415
    from product_search.search.encoding import (  # noqa: PLC0415
        EncodingOptions,
        encode_catalog,
    )

    model = load_model()
    ids, texts = products["product_id"].tolist(), products["text"].tolist()
    size, results, reference = batch_size(), {}, None

    def record(name: str, vectors: np.ndarray, seconds: float, **extra: Any) -> None:
        nonlocal reference
        if reference is None:
            reference = vectors
        cosine = np.sum(vectors * reference, axis=1)
        results[name] = {
            "seconds": seconds,
            "texts_per_second": len(texts) / seconds,
            "max_abs_difference": float(np.abs(vectors - reference).max()),
            "min_cosine_to_torch": float(cosine.min()),
            **extra,
        }
        logger.info("%s: %s", name, results[name])

    # torch first: the others are compared with it.
    started = time.perf_counter()
    vectors = encode_catalog(model, model_id(model), ids, texts, batch_size=size)
    record("torch", vectors, time.perf_counter() - started,
           threads=torch.get_num_threads())  # fmt: skip
    if "onnx_int8" in backends:
        from product_search.onnx_export import export_onnx  # noqa: PLC0415
        from product_search.search.onnx import OnnxEncoder  # noqa: PLC0415

        started = time.perf_counter()
        export = export_onnx(model, model_id(model), int8=True)
        exported = time.perf_counter() - started
        encoder = OnnxEncoder(export, "int8", torch.get_num_threads())
        started = time.perf_counter()
        vectors = encoder.encode(texts, batch_size=size)
        record("onnx_int8", vectors, time.perf_counter() - started,
               threads=torch.get_num_threads(), export_seconds=exported)  # fmt: skip
    if "ray" in backends:
        import ray  # noqa: PLC0415

        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray_init = time.perf_counter() - started
        options = EncodingOptions(
            backend="ray", shard_size=len(texts), ray={"workers": ray_workers}
        )
        try:
            started = time.perf_counter()
            vectors = encode_catalog(
                model, model_id(model), ids, texts, batch_size=size, options=options
            )
            record(f"ray_{ray_workers}_workers", vectors, time.perf_counter() - started,
                   ray_init_seconds=ray_init, threads=1)  # fmt: skip
        finally:
            ray.shutdown()
    return results


# ---------------------------------------------------------------- report


def markdown(payload: dict[str, Any]) -> str:
    n = payload["products"]
    lines = [
        "# Encoding the catalog: backends and resume",
        "",
        f"{n:,} synthetic products (Home Depot titles recombined, seed {SEED}; "
        f"{payload['mean_words']:.1f} words per text on average), "
        f"all-MiniLM-L6-v2, batch size {payload['batch_size']}. "
        f"Machine: {payload['environment']['cpu_count']} CPU cores, shared with "
        f"other work (load average {payload['load_average']:.1f} at the start), "
        f"torch {payload['environment']['torch']}, commit "
        f"{payload['environment']['git_commit']}.",
        "",
    ]
    if n != 100_000:
        lines += [
            f"**Measured at {n:,} products, not the protocol's 100,000** "
            "(`--products 100000` runs it; at these paces its encodes alone "
            "would take about "
            f"{payload['estimated_minutes_at_100k']:.0f} minutes there).",
            "",
        ]
    lines += [
        "| backend | texts/s | seconds | vs torch: max abs diff | min cosine | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, r in payload["throughput"].items():
        notes = f"{r['threads']} thread(s)"
        if "export_seconds" in r:
            notes += f"; export {r['export_seconds']:.1f} s not counted"
        if "ray_init_seconds" in r:
            notes += (
                f" per actor; actor start counted, ray.init "
                f"{r['ray_init_seconds']:.1f} s not"
            )
        lines.append(
            f"| {name} | {r['texts_per_second']:.0f} | {r['seconds']:.1f} | "
            f"{r['max_abs_difference']:.1e} | {r['min_cosine_to_torch']:.4f} | {notes} |"
        )
    res = payload.get("resume")
    if res:
        full, killed, rerun = res["uninterrupted"], res["killed"], res["rerun"]
        lines += [
            "",
            f"Resume ({res['shards']} shards of {-(-n // res['shards']):,}, torch, "
            "one subprocess per run; wall time includes its start: Python, "
            "torch and the model):",
            "",
            "| run | wall s | start s | encode s | shards encoded | shards read back |",
            "|---|---:|---:|---:|---:|---:|",
            f"| uninterrupted | {full['wall_seconds']:.1f} | {full['start_seconds']:.1f} "
            f"| {full['encode_seconds']:.1f} | {len(full['encoded'])} | {full['read_back']} |",
            f"| killed at 50% | {killed['killed_after_seconds']:.1f} | | | "
            f"{killed['shards_saved']} saved | |",
            f"| rerun | {rerun['wall_seconds']:.1f} | {rerun['start_seconds']:.1f} "
            f"| {rerun['encode_seconds']:.1f} | {len(rerun['encoded'])} | {rerun['read_back']} |",
            "",
            f"The rerun took {rerun['wall_seconds'] / full['wall_seconds']:.0%} of "
            f"the uninterrupted run's wall time "
            f"({rerun['encode_seconds'] / full['encode_seconds']:.0%} of its encode).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument(
        "--torch-threads", type=int, default=None,
        help="torch's threads in this process (default: torch's, one per core)",
    )  # fmt: skip
    parser.add_argument(
        "--skip", nargs="*", default=[],
        choices=["onnx_int8", "ray", "resume"], help="parts not to run",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    if args.worker:
        worker(args)
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from common import environment, write_results  # noqa: PLC0415

    if args.torch_threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.torch_threads)
    products = synthetic_products(args.products)
    payload: dict[str, Any] = {
        "products": args.products,
        "seed": SEED,
        "mean_words": float(products["text"].str.split().str.len().mean()),
        "batch_size": batch_size(),
        "load_average": os.getloadavg()[0],
        "environment": environment("cpu"),
    }
    backends = [b for b in ("onnx_int8", "ray") if b not in args.skip]
    payload["throughput"] = throughput(products, backends, args.ray_workers)
    if "resume" not in args.skip:
        payload["resume"] = {
            "shards": args.shards,
            **resume(args.products, args.shards),
        }
    # At 100,000 products, from the paces alone (no fixed costs): each backend
    # once, and the resume's three torch runs (1 + 0.5 + 0.5 encodes).
    paces = {k: r["texts_per_second"] for k, r in payload["throughput"].items()}
    runs = sum(1 / pace for pace in paces.values())
    if "resume" in payload:
        runs += 2 / paces["torch"]
    payload["estimated_minutes_at_100k"] = 100_000 * runs / 60
    write_results(args.out, "encode", payload, markdown(payload))


if __name__ == "__main__":
    main()
