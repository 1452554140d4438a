"""The evaluation report (Markdown): its sections in reading order."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .modes import _search_modes
from .overview import _limitations, _methodology, _summary, _system, _training
from .results import (
    _deployment,
    _examples,
    _findings,
    _onnx,
    _real_queries,
    _results,
)


def render_report(
    *,
    metrics: dict[str, Any],
    examples: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    training_history: dict[str, Any],
    generated_queries: pd.DataFrame,
    data_quality: dict[str, Any],
    split: dict[str, Any],
    params: dict[str, Any],
    max_lane_gap: float,
) -> str:
    """The whole report: summary, system, methodology, training, results,
    search modes, ONNX, findings, deployment, examples, real queries,
    limitations.

    ``params`` are the evaluation parameters (``top_k_examples``);
    ``max_lane_gap`` is ``search.tuning.max_lane_gap``, the most a hybrid
    may rank below its better lane before the report calls it out.
    """
    lines = [
        "# Product search: fine-tuned embedding model evaluation",
        "",
        *_summary(metrics, training_history),
        *_system(metrics),
        *_methodology(
            metrics, training_history, generated_queries, data_quality, split
        ),
        *_training(training_history),
        *_results(metrics),
        *_search_modes(metrics, max_lane_gap),
        *_onnx(metrics),
        *_findings(metrics),
        *_deployment(metrics),
        *_examples(examples, int(params["top_k_examples"])),
        *_real_queries(metrics),
        *_limitations(metrics, generated_queries, split),
    ]
    return "\n".join(lines).rstrip() + "\n"
