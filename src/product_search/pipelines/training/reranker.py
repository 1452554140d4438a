"""Training the reranker: a cross-encoder, its layers optionally started from
the fine-tuned model's, trained on the training pairs against negatives mined
with the fine-tuned model."""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from typing import Any

import pandas as pd
from datasets import Dataset
from sentence_transformers import (
    CrossEncoder,
    CrossEncoderTrainer,
    CrossEncoderTrainingArguments,
    SentenceTransformer,
)
from sentence_transformers.base.modules import Transformer
from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

from product_search.errors import UserError

from .mining import reranker_examples
from .pairs import training_pairs
from .trainer import choose_device, loss_by_step, quiet, training_arguments

logger = logging.getLogger(__name__)


def warm_start(reranker: CrossEncoder, model: SentenceTransformer) -> None:
    """Copy ``model``'s transformer weights into ``reranker``'s, as many
    layers as the reranker has; its pooling and scoring head stay as they
    were. The fine-tuned model's layers already match the shop's queries to
    its products, which the reranker then learns to read together."""
    target, source = reranker[0], model[0]
    if not (isinstance(target, Transformer) and isinstance(source, Transformer)):
        raise UserError(
            "reranker.warm_start needs a transformer in both the reranker and "
            f"the fine-tuned model, got {type(target).__name__} and "
            f"{type(source).__name__}."
        )
    wanted = target.model.base_model.state_dict()
    given = source.model.base_model.state_dict()
    unmatched = [
        k for k in wanted if k not in given or given[k].shape != wanted[k].shape
    ]
    if unmatched:
        raise UserError(
            "reranker.warm_start: the fine-tuned model's weights do not fit the "
            f"reranker's ({len(unmatched)} of {len(wanted)} tensors, e.g. "
            f"{unmatched[0]}); start both from the same base model, or set "
            "reranker.warm_start: false."
        )
    target.model.base_model.load_state_dict({k: given[k] for k in wanted})


def train_reranker(
    train_pairs: pd.DataFrame,
    train_negatives: pd.DataFrame,
    products: pd.DataFrame,
    *,
    fine_tuned_model: SentenceTransformer,
    reranker_base: CrossEncoder,
    params: dict[str, Any],
    search_params: dict[str, Any],
) -> tuple[CrossEncoder, dict[str, Any]]:
    """Train a cross-encoder, started from ``reranker_base`` (its layers from
    the fine-tuned model's with ``warm_start``, see :func:`warm_start`), to
    score (query, product) pairs: the training pairs against hard negatives
    mined with the fine-tuned model's two lanes (see
    :func:`~product_search.pipelines.training.mining.reranker_examples`), with
    binary cross-entropy. With ``enabled: false`` it returns ``reranker_base``
    untrained, and nothing reranks."""
    if not params.get("enabled", False):
        logger.info("The reranker is off (reranker.enabled: false).")
        return reranker_base, {"trained": False}
    # Before the mining, so that weights that do not fit stop it at once.
    model = copy.deepcopy(reranker_base)
    if params.get("warm_start", False):
        warm_start(model, fine_tuned_model)
    pairs, pair_report = training_pairs(train_pairs, products, params.get("max_pairs"))
    device = choose_device(params.get("device", "auto"))
    started = time.perf_counter()
    examples, counts = reranker_examples(
        pairs, train_negatives, products, model=fine_tuned_model.to(device),
        params=params, bm25=search_params["bm25"],
    )  # fmt: skip
    mining_time = time.perf_counter() - started
    model = model.to(device)
    model.max_seq_length = int(params["max_length"])
    with tempfile.TemporaryDirectory(prefix="product-search-reranker-") as output_dir:
        args = training_arguments(
            CrossEncoderTrainingArguments, output_dir, params, device
        )
        trainer = quiet(
            CrossEncoderTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_pandas(examples, preserve_index=False),
                loss=BinaryCrossEntropyLoss(model),
            )
        )
        started = time.perf_counter()
        result = trainer.train()
        wall_time = time.perf_counter() - started
    history = {
        "trained": True,
        "examples": counts,
        "pairs": pair_report,
        "loss_by_step": loss_by_step(trainer),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "mining_time_s": mining_time,
        "wall_time_s": wall_time,
        "device": device,
        "parameters": params,
    }
    logger.info(
        "Trained the reranker on %s in %.1f s on %s; final loss %.4f",
        counts, wall_time, device, result.training_loss,
    )  # fmt: skip
    model.model_card_data.model_id = None
    return model.to("cpu"), history
