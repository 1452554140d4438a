"""Okapi BM25, defined once: the weights here, the scores their sum.

With ``N`` products, ``df(t)`` of them holding term ``t``, ``tf(t, d)`` its
count in product ``d`` of ``|d|`` terms and ``avgdl`` the mean length::

    idf(t)     = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    w(t, d)    = idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))
    bm25(q, d) = sum over the terms t of q (repeats counted) of w(t, d)

as Lucene (8 and later) computes it: Robertson's BM25 without its constant
factor ``k1 + 1``, which changes no ranking.

:func:`build_index` is the only code that knows the formula. The search table
stores its ``w(., d)`` as each product's ``sparsevec`` and the table's search
function (``search/table/search_function.sql``) only sums them: the inner
product with the sparse vector of the query's term counts is ``bm25(q, d)``.
:func:`score` is that same sum in Python, for the code that ranks without the
database (mining training negatives) and for the tests that hold the
database's scores to it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field


class Bm25Params(BaseModel):
    """BM25's term-frequency saturation ``k1`` and length normalisation ``b``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k1: float = Field(1.2, ge=0)
    b: float = Field(0.75, ge=0, le=1)


@dataclass(frozen=True)
class LexicalIndex:
    """BM25 weights of a catalog: the vocabulary (term -> id, 0-based, in
    term order), each term's document frequency, and each product's weights
    as ``{term id: weight}``."""

    term_ids: dict[str, int]
    document_frequency: list[int]
    weights: list[dict[int, float]]
    lengths: list[int]
    average_length: float
    params: Bm25Params

    @property
    def size(self) -> int:
        """The number of distinct terms: the dimension of the sparse vectors."""
        return len(self.term_ids)

    @cached_property
    def postings(self) -> dict[int, list[tuple[int, float]]]:
        """For each term id, the products holding it (row, weight): what the
        table's GIN index over the terms is to the database."""
        postings: dict[int, list[tuple[int, float]]] = {}
        for row, weights in enumerate(self.weights):
            for term_id, weight in weights.items():
                postings.setdefault(term_id, []).append((row, weight))
        return postings


def idf(document_frequency: int, documents: int) -> float:
    """Lucene's BM25 idf: never negative, even for a term in every product."""
    return math.log(
        1 + (documents - document_frequency + 0.5) / (document_frequency + 0.5)
    )


def build_index(documents: Sequence[Sequence[str]], params: Bm25Params) -> LexicalIndex:
    """The BM25 weights of ``documents``, each a list of analysed terms."""
    counts = [Counter(terms) for terms in documents]
    frequency: Counter[str] = Counter()
    for count in counts:
        frequency.update(count.keys())
    term_ids = {term: i for i, term in enumerate(sorted(frequency))}
    lengths = [len(terms) for terms in documents]
    average = sum(lengths) / len(lengths) if lengths else 0.0
    n = len(documents)
    idfs = {term: idf(frequency[term], n) for term in term_ids}
    k1, b = params.k1, params.b
    weights = []
    for count, length in zip(counts, lengths, strict=True):
        norm = k1 * (1 - b + b * length / average) if average else k1
        weights.append(
            {
                term_ids[term]: idfs[term] * tf / (tf + norm)
                for term, tf in sorted(count.items())
            }
        )
    return LexicalIndex(
        term_ids=term_ids,
        document_frequency=[frequency[term] for term in term_ids],
        weights=weights,
        lengths=lengths,
        average_length=average,
        params=params,
    )


def score(index: LexicalIndex, query_terms: Iterable[str]) -> dict[int, float]:
    """BM25 of the analysed query for each product holding any of its terms
    (OR semantics: the lexical lane's candidates), by row; a product without
    one is no candidate. The search function's sum, in Python."""
    query = Counter(t for t in query_terms if t in index.term_ids)
    scores: dict[int, float] = {}
    for term, count in query.items():
        for row, weight in index.postings.get(index.term_ids[term], ()):
            scores[row] = scores.get(row, 0.0) + count * weight
    return scores
