"""Nodes of the training pipeline: fine-tune the base model on (query, product)
pairs with in-batch negatives, and on (query, product, logged negative)
triplets where the search log has them; then train a cross-encoder reranker
on the same pairs against negatives mined with the fine-tuned model."""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, DatasetDict
from sentence_transformers import (
    CrossEncoder,
    CrossEncoderTrainer,
    CrossEncoderTrainingArguments,
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.base.modules import Transformer
from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.sentence_transformer.training_args import BatchSamplers
from sentence_transformers.util import mine_hard_negatives
from transformers import ProgressCallback, TrainerCallback

from product_search.errors import UserError
from product_search.search.analyzer import analyze
from product_search.search.bm25 import Bm25Params, build_index
from product_search.search.index import unit_vectors
from product_search.search.rerank import lane_candidates, rerank_text

logger = logging.getLogger(__name__)


def choose_device(requested: str = "auto") -> str:
    """CUDA, then Apple MPS, then CPU, unless a device is named."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def training_pairs(
    train_pairs: pd.DataFrame, products: pd.DataFrame, max_pairs: int | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Join each query to its product's text; drop and count pairs that cannot
    be used (unknown product, empty query, duplicate)."""
    if train_pairs.empty:
        raise UserError(
            "There are no training pairs: run the data_generation pipeline first "
            "or check `train_pairs` in the catalog."
        )
    texts = products.set_index("product_id")["text"]
    pairs = train_pairs.assign(
        query=train_pairs["query"].fillna("").astype(str).str.strip(),
        text=train_pairs["product_id"].map(texts),
    )
    unknown = pairs["text"].isna()
    empty = ~unknown & (pairs["query"] == "")
    duplicate = ~unknown & ~empty & pairs.duplicated(["query", "product_id"])
    report = {
        "input_pairs": len(pairs),
        "unknown_product": int(unknown.sum()),
        "empty_query": int(empty.sum()),
        "duplicate_pair": int(duplicate.sum()),
    }
    if report["unknown_product"]:
        logger.warning(
            "Dropped %d training pairs whose product id is not in the catalog "
            "(e.g. %s)",
            report["unknown_product"],
            pairs.loc[unknown, "product_id"].head(3).tolist(),
        )
    pairs = pairs[~(unknown | empty | duplicate)]
    if max_pairs:
        pairs = logged_first(pairs).head(int(max_pairs))
    if pairs.empty:
        raise UserError(f"No usable training pair is left: {report}.")
    report["used_pairs"] = len(pairs)
    if "source" in pairs:
        report["by_source"] = {
            str(source): int(count)
            for source, count in pairs["source"].value_counts().sort_index().items()
        }
    return pairs.reset_index(drop=True), report


def logged_first(pairs: pd.DataFrame) -> pd.DataFrame:
    """``pairs`` with the search log's first, each source in its order: a cap
    on the pairs keeps the shop's real judgments before generated queries,
    which teach less about real shoppers (bench/results/home_depot.md)."""
    if "source" not in pairs:
        return pairs
    return pairs.sort_values(
        "source", key=lambda source: source != "log", kind="stable"
    )


def training_datasets(
    pairs: pd.DataFrame, negatives: pd.DataFrame, texts: pd.Series
) -> dict[str, Dataset]:
    """``pairs`` (anchor, positive) and, for the pairs whose query has a logged
    negative, ``triplets`` (anchor, positive, negative). A query's negatives
    are dealt out in turn over its positives."""
    negatives = negatives.assign(text=negatives["product_id"].map(texts)).dropna(
        subset=["text"]
    )
    by_query = negatives.groupby("query_id")["text"].agg(list)
    turn = pairs.groupby("query_id").cumcount()
    negative = [
        by_query[qid][i % len(by_query[qid])] if qid in by_query.index else None
        for qid, i in zip(pairs["query_id"], turn, strict=True)
    ]
    has_negative = np.array([n is not None for n in negative], dtype=bool)
    datasets = {}
    plain = pairs[~has_negative]
    if len(plain):
        datasets["pairs"] = Dataset.from_dict(
            {"anchor": plain["query"].tolist(), "positive": plain["text"].tolist()}
        )
    if has_negative.any():
        with_negative = pairs[has_negative]
        datasets["triplets"] = Dataset.from_dict(
            {
                "anchor": with_negative["query"].tolist(),
                "positive": with_negative["text"].tolist(),
                "negative": [n for n in negative if n is not None],
            }
        )
    return datasets


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


def _with_hard_negatives(
    dataset: Dataset,
    base_model: SentenceTransformer,
    corpus: list[str],
    options: dict[str, Any],
) -> Dataset:
    """Add, for each pair, products the base model ranks high but that are not
    the answer: harder negatives than random in-batch ones."""
    return mine_hard_negatives(
        dataset,
        base_model,
        corpus=corpus,
        num_negatives=int(options["num_negatives"]),
        range_min=int(options["range_min"]),
        range_max=int(options["range_max"]),
        absolute_margin=float(options["margin"]),
        sampling_strategy="top",
        output_format="n-tuple",
        verbose=False,
    )


def _training_arguments(
    kind: type, output_dir: str, params: dict[str, Any], device: str, **extra: Any
) -> Any:
    """The trainer arguments both trainings share, from their parameters."""
    return kind(
        output_dir=output_dir,
        num_train_epochs=params["epochs"],
        per_device_train_batch_size=int(params["batch_size"]),
        learning_rate=float(params["learning_rate"]),
        # transformers 5: a float below 1 is a ratio of the total steps.
        warmup_steps=float(params["warmup_ratio"]),
        seed=int(params["seed"]),
        data_seed=int(params["seed"]),
        use_cpu=device == "cpu",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=False,
        **extra,
    )


# Log lines per training beside the progress bar; the loss of every step
# still goes to the training history.
LOG_LINES = 20


class _QuietProgress(ProgressCallback):
    """The trainer's progress bar without its print of every step's logs."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class _LossLogger(TrainerCallback):
    """One log line every ``max_steps / LOG_LINES`` steps, and at the last."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        every = max(1, state.max_steps // LOG_LINES)
        if not logs or "loss" not in logs:
            return
        if state.global_step % every and state.global_step != state.max_steps:
            return
        logger.info(
            "step %d/%d  epoch %.2f  loss %.4f",
            state.global_step, state.max_steps, logs.get("epoch", 0), logs["loss"],
        )  # fmt: skip


def _quiet(trainer: Any) -> Any:
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_QuietProgress())
    return trainer


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
        datasets["pairs"] = _with_hard_negatives(
            datasets["pairs"], base_model, products["text"].tolist(), hard_negatives
        )
    # One dataset trains as before; several take turns batch by batch, so
    # that every batch has the same columns.
    dataset = (
        datasets["pairs"] if list(datasets) == ["pairs"] else DatasetDict(datasets)
    )
    loss = _build_loss(model, params)

    with tempfile.TemporaryDirectory(prefix="product-search-training-") as output_dir:
        args = _training_arguments(
            SentenceTransformerTrainingArguments, output_dir, params, device,
            # Identical texts in a batch would be false in-batch negatives.
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            bf16=bool(params.get("bf16")) and device == "cuda",
        )  # fmt: skip
        trainer = _quiet(
            SentenceTransformerTrainer(
                model=model,
                args=args,
                train_dataset=dataset,
                loss=loss,
                callbacks=[_LossLogger()],
            )
        )
        started = time.perf_counter()
        result = trainer.train()
        wall_time = time.perf_counter() - started

    losses_by_step = [
        {"step": entry["step"], "epoch": entry["epoch"], "loss": entry["loss"]}
        for entry in trainer.state.log_history
        if "loss" in entry
    ]
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


def reranker_examples(
    pairs: pd.DataFrame,
    negatives: pd.DataFrame,
    products: pd.DataFrame,
    *,
    model: SentenceTransformer,
    params: dict[str, Any],
    bm25: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The reranker's (query, text, label) rows: each training pair's product
    (1) and, for each of its positives, ``negatives.hard`` products that the
    dense or the lexical lane ranks high for the query (past the very top) and
    ``negatives.random`` ones from the catalog (0), plus the query's logged
    negatives (0). A product paired with the query is never its negative."""
    options = params["negatives"]
    columns = list(params["text_columns"])
    texts = [rerank_text(row, columns) for row in products[columns].to_dict("records")]
    ids = products["product_id"].astype(str).tolist()
    row_of = {pid: i for i, pid in enumerate(ids)}
    by_query = pairs.groupby("query_id", sort=False)
    queries = by_query["query"].first()
    vectors = unit_vectors(model, products["text"].tolist(), 64)
    candidates = lane_candidates(
        queries.tolist(),
        unit_vectors(model, queries.tolist(), 64),
        vectors,
        build_index([analyze(t) for t in products["text"]], Bm25Params(**bm25)),
        skip_top=int(options["skip_top"]),
        depth=int(options["depth"]),
    )
    logged = negatives.groupby("query_id")["product_id"].agg(list)
    rng = np.random.default_rng(int(params["seed"]))
    rows, counts = [], {"positive": 0, "hard": 0, "random": 0, "logged": 0}

    def add(query: str, row: int, label: int, kind: str) -> None:
        rows.append((query, texts[row], float(label)))
        counts[kind] += 1

    for (query_id, group), query, mined in zip(
        by_query, queries, candidates, strict=True
    ):
        positives = {row_of[pid] for pid in group["product_id"] if pid in row_of}
        for row in sorted(positives):
            add(query, row, 1, "positive")
        hard = [row for row in mined if row not in positives]
        n_hard = min(len(hard), int(options["hard"]) * len(positives))
        for row in rng.choice(hard, size=n_hard, replace=False) if n_hard else []:
            add(query, int(row), 0, "hard")
        for _ in range(int(options["random"]) * len(positives)):
            row = int(rng.integers(len(ids)))
            if row not in positives:
                add(query, row, 0, "random")
        for pid in logged.get(query_id, []):
            if pid in row_of and row_of[pid] not in positives:
                add(query, row_of[pid], 0, "logged")
    examples = pd.DataFrame(rows, columns=["query", "text", "label"])
    return examples.sample(frac=1.0, random_state=int(params["seed"])), counts


def model_to_track(model: SentenceTransformer) -> SentenceTransformer:
    """The fine-tuned model as saved, for MLflow to log with the run
    (``fine_tuned_model_mlflow``): a dataset cannot be both Kedro's versioned
    model and MLflow's logged one."""
    return model


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
    score (query, product) pairs: the training pairs against hard negatives mined
    with the fine-tuned model's two lanes (see :func:`reranker_examples`),
    with binary cross-entropy. With ``enabled: false`` it returns
    ``reranker_base`` untrained, and nothing reranks."""
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
        args = _training_arguments(
            CrossEncoderTrainingArguments, output_dir, params, device
        )
        trainer = _quiet(
            CrossEncoderTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_pandas(examples, preserve_index=False),
                loss=BinaryCrossEntropyLoss(model),
                callbacks=[_LossLogger()],
            )
        )
        started = time.perf_counter()
        result = trainer.train()
        wall_time = time.perf_counter() - started
    history = {
        "trained": True,
        "examples": counts,
        "pairs": pair_report,
        "loss_by_step": [
            {"step": e["step"], "epoch": e["epoch"], "loss": e["loss"]}
            for e in trainer.state.log_history
            if "loss" in e
        ],
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
