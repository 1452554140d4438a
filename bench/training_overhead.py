"""Does the project's training node cost more than a plain sentence-transformers
script with identical settings on the same pairs?

Pairs: a few hundred products of the Amazon 1k sample with offline queries.
Both sides start from the loaded base model and end with a trained model. After
an untimed warm-up run, the two alternate (who goes first swaps each repeat)
so that machine noise hits both; medians are compared.
Writes bench/results/training_overhead.{json,md}.

    .venv/bin/python bench/training_overhead.py [--products 100] [--repeats 3]
        [--device cuda] [--bf16] [--batch-size 256] [--name training_overhead_gpu]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from common import (
    AMAZON,
    AMAZON_COLUMNS,
    NO_NEGATIVES,
    REFERENCE_RECIPE,
    ROOT,
    generate_queries,
    load_params,
)
from datasets import Dataset
from sentence_transformers import (
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.sentence_transformer.training_args import BatchSamplers

from product_search.datasets import SentenceTransformerModelDataset
from product_search.pipelines.data_generation.products import prepare_products
from product_search.pipelines.data_generation.split import split_queries
from product_search.pipelines.training.embedding import train_model
from product_search.pipelines.training.trainer import choose_device


def amazon_pairs(n_products: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    params = load_params("data_generation") | {"provider": "offline",
                                               "columns": AMAZON_COLUMNS,
                                               "max_products": n_products}  # fmt: skip
    params["split"] = params["split"] | {"validation": {}}  # the reference's 80/20
    raw = pd.read_csv(AMAZON, dtype=str, keep_default_na=False)
    products, _ = prepare_products(raw, params)
    _, queries, _ = generate_queries(products, params)
    train, _, _ = split_queries(queries, params)
    return products, train


def plain_script(base_model, pairs: pd.DataFrame, params: dict, device: str) -> float:
    """The sentence-transformers way, with nothing of ours in it."""
    started = time.perf_counter()
    model = base_model.to(device)
    model.max_seq_length = params["max_seq_length"]
    dataset = Dataset.from_dict({"anchor": pairs["query"].tolist(),
                                 "positive": pairs["text"].tolist()})  # fmt: skip
    loss = losses.MultipleNegativesRankingLoss(model)
    with tempfile.TemporaryDirectory() as output_dir:
        args = SentenceTransformerTrainingArguments(
            output_dir=output_dir,
            num_train_epochs=params["epochs"],
            per_device_train_batch_size=params["batch_size"],
            learning_rate=params["learning_rate"],
            warmup_steps=params["warmup_ratio"],
            seed=params["seed"],
            data_seed=params["seed"],
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            use_cpu=device == "cpu",
            bf16=params["bf16"],
            logging_steps=1,
            save_strategy="no",
            report_to="none",
        )
        SentenceTransformerTrainer(
            model=model, args=args, train_dataset=dataset, loss=loss
        ).train()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="CUDA only")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--name", default="training_overhead")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    device = choose_device(args.device)
    params = load_params("training") | REFERENCE_RECIPE
    params |= {"device": device, "bf16": args.bf16}
    if args.batch_size:
        params["batch_size"] = args.batch_size
    products, train = amazon_pairs(args.products)
    pairs = train.assign(text=train["product_id"].map(
        products.set_index("product_id")["text"]))  # fmt: skip
    dataset = SentenceTransformerModelDataset(
        model_name_or_path="sentence-transformers/all-MiniLM-L6-v2"
    )

    def node() -> float:
        base_model = dataset.load()
        started = time.perf_counter()
        train_model(train, NO_NEGATIVES, products, base_model, params)
        return time.perf_counter() - started

    def plain() -> float:
        return plain_script(dataset.load(), pairs, params, device)

    # An untimed first run pays for kernel selection, caches and lazy imports.
    for _ in range(args.warmup):
        plain()
    times: dict[str, list[float]] = {"plain": [], "node": []}
    for repeat in range(args.repeats):
        # Alternate who goes first, so that drift hits both sides alike.
        order = [("plain", plain), ("node", node)]
        for name, run in order if repeat % 2 == 0 else reversed(order):
            times[name].append(run())

    n_pairs, epochs = len(pairs), params["epochs"]
    plain, node = statistics.median(times["plain"]), statistics.median(times["node"])
    result = {
        "device": device,
        "products": len(products),
        "pairs": n_pairs,
        "epochs": epochs,
        "batch_size": params["batch_size"],
        "bf16": args.bf16,
        "accelerator": torch.cuda.get_device_name() if device == "cuda" else None,
        "repeats": args.repeats,
        "warmup_runs": args.warmup,
        "wall_s": times,
        "median_wall_s": {"plain": plain, "node": node},
        "pairs_per_s": {
            "plain": n_pairs * epochs / plain,
            "node": n_pairs * epochs / node,
        },
        "ratio_node_over_plain": node / plain,
        "target_ratio_max": 1.05,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    where = result["accelerator"] or f"{device}, {os.cpu_count()} cores"
    table = (
        f"# Training overhead ({where}, {n_pairs} pairs x {epochs} epochs, "
        f"batch {params['batch_size']}{', bf16' if args.bf16 else ''}, "
        f"median of {args.repeats})\n\n"
        "| | wall s | pairs/s |\n|---|---:|---:|\n"
        f"| plain sentence-transformers | {plain:.1f} | "
        f"{result['pairs_per_s']['plain']:.1f} |\n"
        f"| project training node | {node:.1f} | {result['pairs_per_s']['node']:.1f} |\n"
        f"\nratio node/plain = **{node / plain:.3f}** (target <= 1.05)\n"
    )
    (args.out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
