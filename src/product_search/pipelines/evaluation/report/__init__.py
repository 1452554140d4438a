"""The evaluation report (Markdown) and chart (matplotlib), built from the
``metrics`` of :func:`~..nodes.compare_models` and the run's other records."""

from .chart import plot_metrics_chart
from .document import render_report
from .modes import fusion_label

__all__ = ["fusion_label", "plot_metrics_chart", "render_report"]
