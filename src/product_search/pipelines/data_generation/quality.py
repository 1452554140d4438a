"""Node that gathers the pipeline's reports into one data-quality report."""

from __future__ import annotations

from typing import Any

import pandas as pd


def report_data_quality(
    product_report: dict[str, Any],
    query_report: dict[str, Any],
    generation_failures: pd.DataFrame,
    search_log_report: dict[str, Any],
    source_report: dict[str, Any],
) -> dict[str, Any]:
    """One data-quality report for the whole pipeline."""
    return {
        "products": product_report,
        "generation_failures": len(generation_failures),
        "queries": query_report,
        "search_logs": search_log_report,
        "query_sources": source_report,
    }
