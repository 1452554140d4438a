"""The evaluation chart (matplotlib): base beside fine-tuned model for every
metric, and the headline metric of each search mode."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .formatting import QUERY_SETS, SEARCH_MODES, metric_label

BASELINE_COLOUR, FINE_TUNED_COLOUR = "#9aa5b1", "#1f6feb"


def _bars(ax: Any, changes: dict[str, Any], title: str) -> None:
    names = list(changes)
    x = np.arange(len(names))
    width = 0.38
    for offset, key, label, colour in (
        (-width / 2, "baseline", "Baseline", BASELINE_COLOUR),
        (width / 2, "fine_tuned", "Fine-tuned", FINE_TUNED_COLOUR),
    ):
        values = [changes[name][key] for name in names]
        bars = ax.bar(x + offset, values, width, label=label, color=colour)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(x, [metric_label(name) for name in names], rotation=30, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)


def _mode_bars(ax: Any, modes: dict[str, Any]) -> None:
    """The headline metric of each search mode, one bar group per query set."""
    metric = modes["metrics"][0]
    sets = [name for name in QUERY_SETS if modes.get(name)]
    names = list(modes[sets[0]])
    x = np.arange(len(names))
    width = 0.8 / len(sets)
    for i, set_name in enumerate(sets):
        values = [modes[set_name][mode][metric] for mode in names]
        bars = ax.bar(
            x + (i - (len(sets) - 1) / 2) * width,
            values,
            width,
            label=QUERY_SETS[set_name],
            color=["#1f6feb", "#d29922"][i],
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(
        x, [SEARCH_MODES.get(mode, mode) for mode in names], rotation=30, ha="right"
    )
    ax.set_ylim(0, 1.08)
    title = f"{metric_label(metric)} by search mode"
    if len(sets) == 1:
        ax.set_title(f"{title}\n({QUERY_SETS[sets[0]].lower()})", fontsize=10)
    else:
        ax.set_title(title, fontsize=10)
        # Below the mode names, clear of the bars' labels.
        ax.legend(
            fontsize=7, frameon=False, ncols=len(sets), loc="upper center",
            bbox_to_anchor=(0.5, -0.45),
        )  # fmt: skip
    ax.spines[["top", "right"]].set_visible(False)


def plot_metrics_chart(metrics: dict[str, Any]) -> Figure:
    """Grouped bars, baseline beside fine-tuned, for every metric; a panel for
    the real-query metrics when there are some, and one for the search modes."""
    real = metrics.get("real_queries")
    modes = metrics.get("search_modes")
    ratios = [2] + ([1] if real else []) + ([1.5] if modes else [])
    panels = len(ratios)
    figure = Figure(figsize=(5 + 3.5 * (panels - 1) + 1, 4.5), layout="constrained")
    # Drawn with Agg: no display or GUI backend needed.
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False, width_ratios=ratios)[0]
    _bars(
        axes[0],
        metrics["metrics"],
        f"Held-out synthetic queries (n = {metrics['test_queries']:,})",
    )
    axes[0].set_ylabel("Score")
    if real:
        _bars(
            axes[1], real["metrics"], f"Real shopper queries (n = {real['queries']:,})"
        )
    if modes:
        _mode_bars(axes[-1], modes)
    figure.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    figure.suptitle("Base vs fine-tuned model" + (" and search modes" if modes else ""))
    return figure
