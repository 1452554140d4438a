"""Negative mining: products a model ranks high for a query that are not its
answer, harder to tell apart than random ones. The embedding model's pairs
get theirs from the base model; the reranker's examples from the fine-tuned
model's two lanes, dense and lexical, as the search serves them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives

from product_search.search.analyzer import analyze
from product_search.search.bm25 import Bm25Params, LexicalIndex, build_index, score
from product_search.search.index import unit_vectors
from product_search.search.rerank import rerank_text


def with_hard_negatives(
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


def _top(scores: np.ndarray, depth: int) -> list[int]:
    """Indices of the ``depth`` highest scores, best first (ties by index)."""
    depth = min(depth, len(scores))
    if depth <= 0:
        return []
    top = np.argpartition(-scores, depth - 1)[:depth]
    return sorted(top.tolist(), key=lambda i: (-scores[i], i))


def lane_candidates(
    queries: Sequence[str],
    query_vectors: np.ndarray,
    product_vectors: np.ndarray,
    lexical: LexicalIndex,
    *,
    skip_top: int,
    depth: int,
) -> list[list[int]]:
    """For each query, the rows of the products its dense lane (cosine of unit
    vectors) and its lexical lane (BM25, OR of the terms) rank from
    ``skip_top + 1`` to ``depth``, interleaved lane by lane, best first,
    without repeats. The very top is skipped: it may hold true positives the
    training pairs do not name."""
    found = []
    # Blocks of queries bound the dense score matrix's memory.
    for start in range(0, len(queries), 1024):
        dense = query_vectors[start : start + 1024] @ product_vectors.T
        for offset, query in enumerate(queries[start : start + 1024]):
            bm25 = score(lexical, analyze(query))
            lexical_top = sorted(bm25, key=lambda r: (-bm25[r], r))[skip_top:depth]
            dense_top = _top(dense[offset], depth)[skip_top:]
            merged = [
                row
                for pair in itertools.zip_longest(dense_top, lexical_top)
                for row in pair
                if row is not None
            ]
            found.append(list(dict.fromkeys(merged)))
    return found


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
