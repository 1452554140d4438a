"""Fine-tuning the embedding model: the base model trained on (query, product)
pairs with in-batch negatives, and on (query, product, logged negative)
triplets where the search log has them."""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from typing import Any

import pandas as pd
import torch
from datasets import DatasetDict
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.sentence_transformer.training_args import BatchSamplers

from product_search.errors import UserError

from .mining import with_hard_negatives
from .pairs import training_datasets, training_pairs
from .trainer import choose_device, loss_by_step, quiet, training_arguments

logger = logging.getLogger(__name__)


def _count_truncated(model: SentenceTransformer, texts: list[str]) -> int:
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    return sum(length > model.max_seq_length for length in lengths)


def _build_loss(model: SentenceTransformer, params: dict[str, Any]) -> torch.nn.Module:
    name = params["loss"]
    if name == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model)
    elif name == "cached_mnrl":
        # Large effective batches (more negatives) in bounded memory.
        loss = losses.CachedMultipleNegativesRankingLoss(
            model, mini_batch_size=int(params["mini_batch_size"])
        )
    else:
        raise UserError(f"Unknown loss '{name}': use mnrl or cached_mnrl.")
    matryoshka = params.get("matryoshka") or {}
    if matryoshka.get("enabled"):
        loss = losses.MatryoshkaLoss(
            model, loss, matryoshka_dims=list(matryoshka["dims"])
        )
    return loss


def train_model(
    train_pairs: pd.DataFrame,
    train_negatives: pd.DataFrame,
    products: pd.DataFrame,
    base_model: SentenceTransformer,
    params: dict[str, Any],
) -> tuple[SentenceTransformer, dict[str, Any]]:
    """Fine-tune a copy of ``base_model`` on (query, product text) pairs with
    MultipleNegativesRankingLoss, a pair whose query has a logged negative as a
    (query, product, negative) triplet; return it and the training history."""
    pairs, pair_report = training_pairs(train_pairs, products, params.get("max_pairs"))
    device = choose_device(params.get("device", "auto"))
    model = copy.deepcopy(base_model).to(device)
    model.max_seq_length = int(params["max_seq_length"])
    pair_report["truncated_products"] = _count_truncated(
        model, pairs["text"].drop_duplicates().tolist()
    )
    if pair_report["truncated_products"]:
        logger.info(
            "%d product texts are longer than max_seq_length=%d tokens and are "
            "truncated",
            pair_report["truncated_products"],
            model.max_seq_length,
        )

    texts = products.set_index("product_id")["text"]
    negatives = (
        train_negatives if params.get("logged_negatives") else train_negatives[:0]
    )
    datasets = training_datasets(pairs, negatives, texts)
    hard_negatives = params.get("hard_negatives") or {}
    if hard_negatives.get("enabled") and "pairs" in datasets:
        datasets["pairs"] = with_hard_negatives(
            datasets["pairs"], base_model, products["text"].tolist(), hard_negatives
        )
    # One dataset trains as before; several take turns batch by batch, so
    # that every batch has the same columns.
    dataset = (
        datasets["pairs"] if list(datasets) == ["pairs"] else DatasetDict(datasets)
    )
    loss = _build_loss(model, params)

    with tempfile.TemporaryDirectory(prefix="product-search-training-") as output_dir:
        args = training_arguments(
            SentenceTransformerTrainingArguments, output_dir, params, device,
            # Identical texts in a batch would be false in-batch negatives.
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            bf16=bool(params.get("bf16")) and device == "cuda",
        )  # fmt: skip
        trainer = quiet(
            SentenceTransformerTrainer(
                model=model, args=args, train_dataset=dataset, loss=loss
            )
        )
        started = time.perf_counter()
        result = trainer.train()
        wall_time = time.perf_counter() - started

    losses_by_step = loss_by_step(trainer)
    history = {
        "loss_by_step": losses_by_step,
        "steps": trainer.state.global_step,
        "epochs": params["epochs"],
        "train_pairs": len(pairs),
        "triplets": len(datasets.get("triplets", [])),
        "pairs": pair_report,
        "pairs_per_s": len(pairs) * float(params["epochs"]) / wall_time,
        "wall_time_s": wall_time,
        "train_loss": result.training_loss,
        "device": device,
        "base_model": base_model.model_card_data.model_id,
        "parameters": params,
    }
    logger.info(
        "Fine-tuned on %d pairs in %.1f s (%.1f pairs/s) on %s; final loss %.4f",
        len(pairs), wall_time, history["pairs_per_s"], device,
        losses_by_step[-1]["loss"] if losses_by_step else float("nan"),
    )  # fmt: skip
    model.model_card_data.model_id = None
    return model.to("cpu"), history


def model_to_track(model: SentenceTransformer) -> SentenceTransformer:
    """The fine-tuned model as saved, for MLflow to log with the run
    (``fine_tuned_model_mlflow``): a dataset cannot be both Kedro's versioned
    model and MLflow's logged one."""
    return model
