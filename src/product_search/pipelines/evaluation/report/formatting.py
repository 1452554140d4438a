"""Labels and number formats shared by the report's sections and its chart,
and the two sentences that state a change and its significance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

LABELS = {"ndcg": "NDCG", "mrr": "MRR", "accuracy": "Accuracy", "recall": "Recall"}
SEARCH_MODES = {
    "lexical": "Lexical (BM25)",
    "dense_base": "Dense, base model",
    "dense_fine_tuned": "Dense, fine-tuned model",
    "hybrid_base": "Hybrid, base model",
    "hybrid_fine_tuned": "Hybrid, fine-tuned model",
    "hybrid_rerank_fine_tuned": "Hybrid + rerank, fine-tuned model",
}
QUERY_SETS = {
    "test_queries": "Held-out synthetic queries",
    "real_queries": "Real shopper queries (graded)",
}


def metric_label(name: str) -> str:
    """``"ndcg@10"`` as ``"NDCG@10"``."""
    family, _, k = name.partition("@")
    return f"{LABELS.get(family, family)}@{k}"


def _value(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _delta(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}%"


def _count(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else "n/a"


def _share(x: float) -> str:
    return f"{100 * x:.1f}%"


def _p(x: float | None) -> str:
    """``"p = 0.012"``, ``"p < 0.001"`` or ``"p n/a"``."""
    if x is None:
        return "p n/a"
    return "p < 0.001" if x < 0.001 else f"p = {x:.3f}"


def _cell(text: Any) -> str:
    """Text that cannot break a Markdown table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _distinct(frame: pd.DataFrame, column: str) -> str:
    """The distinct values of a column, joined: who wrote the queries, say."""
    values = (
        sorted(frame[column].dropna().astype(str).unique()) if column in frame else []
    )
    return ", ".join(values) or "unknown"


def _significance_sentence(significance: dict[str, Any]) -> str:
    if not significance["improved"] and not significance["worsened"]:
        return "No query's score changed, so there is no difference to test."
    ci = (
        f"95% bootstrap CI of the mean gain {significance['ci95_low']:+.4f} to "
        f"{significance['ci95_high']:+.4f}"
    )
    tests = (
        f"Wilcoxon signed-rank {_p(significance['wilcoxon_p_value'])}, "
        f"paired t-test {_p(significance['paired_t_p_value'])}"
    )
    if significance["wilcoxon_p_value"] is None:
        return f"Its significance could not be tested ({tests}; {ci})."
    if significance["significant"]:
        return f"The change is statistically significant ({tests}; {ci})."
    return (
        f"The change is not statistically significant at the "
        f"{significance['alpha']:.0%} level "
        f"({tests}; {ci}): treat it as no measurable difference."
    )


def _change_sentence(label: str, change: dict[str, Any]) -> str:
    if not change["delta"]:
        return f"{label} stayed at {change['baseline']:.4f}"
    direction = "rose" if change["delta"] > 0 else "fell"
    return (
        f"{label} {direction} from {change['baseline']:.4f} to "
        f"{change['fine_tuned']:.4f} ({_delta(change['delta'])}, "
        f"{_pct(change['pct_change'])})"
    )
