"""The report rendered straight from a hand-written ``metrics`` record: the
search-mode section's lane-gap tolerance comes from the caller, and the
formats its tables and sentences share."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from product_search.pipelines.evaluation.report import render_report
from product_search.pipelines.evaluation.report.formatting import _p, _table

from .conftest import ROOT

with open(ROOT / "conf" / "base" / "parameters_search.yml") as f:
    MAX_LANE_GAP = float(yaml.safe_load(f)["search"]["tuning"]["max_lane_gap"])

UNCHANGED = {"baseline": 0.5, "fine_tuned": 0.5, "delta": 0.0, "pct_change": 0.0}
OPTIONS = {
    "fusion": "rrf", "rrf_k": 60, "dense_weight": 1.0, "lexical_weight": 1.0,
    "dense_depth": 100, "lexical_depth": 100,
}  # fmt: skip


def _metrics(hybrid_fine_tuned: float) -> dict:
    """Two models that score the same, and search modes in which the
    fine-tuned model's dense lane scores 0.8 and its hybrid the given value."""
    return {
        "primary_metric": "ndcg@10",
        "metrics": {"ndcg@10": UNCHANGED},
        "models": {"baseline": "base", "fine_tuned": "tuned"},
        "corpus_size": 2,
        "test_queries": 4,
        "significance": {
            "metric": "ndcg@10", "queries": 4, "improved": 0, "worsened": 0,
            "unchanged": 4, "significant": False, "alpha": 0.05,
            "bootstrap_samples": 200, "seed": 42,
        },
        "search_modes": {
            "metrics": ["ndcg@10"],
            "options": {"fine_tuned": OPTIONS},
            "test_queries": {
                "lexical": {"ndcg@10": 0.6},
                "dense_fine_tuned": {"ndcg@10": 0.8},
                "hybrid_fine_tuned": {"ndcg@10": hybrid_fine_tuned},
            },
        },
    }  # fmt: skip


def _render(metrics: dict, **kwargs) -> str:
    return render_report(
        metrics=metrics,
        examples=([], []),
        training_history={},
        generated_queries=pd.DataFrame(),
        data_quality={},
        split={"split_by": "query", "test_size": 0.2, "seed": 42},
        params={"top_k_examples": 5},
        **kwargs,
    )


@pytest.mark.parametrize(
    ("shortfall", "max_lane_gap", "called_out"),
    [
        # Half the project's tolerance below the dense lane: within it, but
        # outside a tolerance four times tighter.
        (MAX_LANE_GAP / 2, MAX_LANE_GAP, False),
        (MAX_LANE_GAP / 2, MAX_LANE_GAP / 4, True),
        (2 * MAX_LANE_GAP, MAX_LANE_GAP, True),
    ],
)
def test_a_hybrid_below_its_better_lane_by_more_than_max_lane_gap_is_called_out(
    shortfall, max_lane_gap, called_out
):
    report = _render(_metrics(0.8 - shortfall), max_lane_gap=max_lane_gap)

    section = report[report.index("## Search modes") : report.index("## Key findings")]
    sentence = (
        f"Hybrid search with the fine-tuned model is {-shortfall:+.4f} NDCG@10 "
        "below its dense lane here"
    )
    assert (sentence in section) is called_out


def test_the_report_has_no_lane_gap_of_its_own():
    # The tolerance is search.tuning.max_lane_gap, passed in: no default that
    # could drift from the parameter.
    with pytest.raises(TypeError, match="max_lane_gap"):
        _render(_metrics(0.79))


def test_p_values_and_table_cells_are_formatted_for_markdown():
    assert [_p(None), _p(0.0004), _p(0.0123)] == ["p n/a", "p < 0.001", "p = 0.012"]
    assert _table(("a", "b"), [("x | y", "two\n lines")]) == [
        "| a | b |",
        "|---|---|",
        "| x \\| y | two lines |",
    ]
