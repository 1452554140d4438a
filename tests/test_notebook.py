"""notebooks/explore_results.ipynb, executed as a reader would run it, on the
outputs of a fresh `kedro run --env=test` (the session's ``test_env_run``): it
must not rot as the catalog and the outputs change."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_results.ipynb"
logger = logging.getLogger(__name__)
# Kedro's rich logging colours IPython's plain-text reprs too.
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Appended to the executed notebook: what the reader's cells left behind.
SUMMARY_CELL = """
import json
print(json.dumps({
    "env": context.env,
    "metric_rows": list(metrics_table.index),
    "metric_columns": list(metrics_table.columns),
    "worst_rows": len(worst),
    "worst_sorted": bool(worst["delta"].is_monotonic_increasing),
    "side_by_side_columns": list(side_by_side.columns),
    "side_by_side_rows": len(side_by_side),
}))
"""


def _tagged(notebook: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    [cell] = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return cell


def _text(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed or displayed, as plain text."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return ANSI.sub("", "\n".join(parts))


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_runs_on_the_test_environment(test_env_run, monkeypatch):
    # The kernel inherits this environment: `%load_ext kedro.ipython` creates
    # its session with KEDRO_ENV, as `kedro jupyter lab --env=test` would.
    monkeypatch.setenv("KEDRO_ENV", "test")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(SUMMARY_CELL))
    before = sorted(NOTEBOOK.parent.iterdir())
    started = time.perf_counter()
    # Started from notebooks/, as Jupyter starts a notebook's kernel.
    NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()  # raises CellExecutionError, with the traceback, on any error
    logger.info("notebook: %.0f s", time.perf_counter() - started)

    errors = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]
    assert errors == []
    # Everything it reads and writes (the MLflow store included) is the project's.
    assert sorted(NOTEBOOK.parent.iterdir()) == before
    summary = json.loads(_text(notebook.cells[-1]))
    assert summary["env"] == "test"
    # 1. every metric of both models, the primary one among them
    assert "ndcg@10" in summary["metric_rows"]
    assert {"baseline", "fine_tuned", "delta"} <= set(summary["metric_columns"])
    assert "ndcg@10" in _text(_tagged(notebook, "metrics-table"))
    assert "hybrid_fine_tuned" in _text(_tagged(notebook, "search-modes"))
    # 2. at most ten queries, the largest loss first
    assert 0 < summary["worst_rows"] <= 10
    assert summary["worst_sorted"]
    assert "ndcg@10_fine_tuned" in _text(_tagged(notebook, "worst-queries"))
    # 3. the chart, as an image
    chart = _tagged(notebook, "chart").outputs
    assert any("image/png" in output.get("data", {}) for output in chart)
    # 4. five titles from each model
    assert summary["side_by_side_columns"] == ["base_model", "fine_tuned_model"]
    assert summary["side_by_side_rows"] == 5
    assert "Query: " in _text(_tagged(notebook, "side-by-side"))


def test_the_run_lands_in_mlflow_with_its_metrics_and_model(test_env_run):
    import mlflow  # noqa: PLC0415

    mlflow.set_tracking_uri(f"sqlite:///{ROOT / 'data' / 'mlflow-test.db'}")
    experiment = mlflow.get_experiment_by_name("product_search_test")
    [run] = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id],
        # The latest run that evaluated (other tests run data_generation only).
        filter_string="metrics.`tracked_metrics.metrics.ndcg_at_10.fine_tuned` >= 0",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    metrics = json.loads(
        max(
            (ROOT / "data" / "test" / "08_reporting" / "metrics.json").glob(
                "*/metrics.json"
            )
        ).read_text()
    )

    assert run.info.status == "FINISHED"
    assert run.data.metrics["tracked_metrics.metrics.ndcg_at_10.fine_tuned"] == (
        pytest.approx(metrics["metrics"]["ndcg@10"]["fine_tuned"])
    )
    assert run.data.params["training.epochs"] == "1"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {
        "evaluation_report.md",
        "metrics_chart.png",
        "training_history.json",
    } <= artifacts
    # The fine-tuned model, logged with the run.
    [model] = mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    assert mlflow.sentence_transformers.load_model(model.model_uri).encode(
        ["cast iron pan"]
    ).shape == (1, 384)
