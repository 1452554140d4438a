"""The committed Airflow DAG is what `make airflow-dag` writes from today's
pipelines: one task per stage, in the stages' order."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
DAG = ROOT / "airflow_dags" / "product_search_prod_dag.py"
BIN = Path(sys.executable).parent


def test_the_committed_dag_is_up_to_date(tmp_path):
    env = {
        **os.environ,
        "KEDRO_DISABLE_TELEMETRY": "true",
        # conf/prod's MLflow store (the session opens it): one of the test's own.
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    env.pop("KEDRO_ENV", None)
    # The Makefile's airflow-dag target, into another folder.
    result = subprocess.run(
        [BIN / "kedro", "airflow", "create", "--group-by", "namespace",
         "--env", "prod", "--jinja-file", "deploy/airflow_dag_template.j2",
         "--conf-source", "/opt/airflow/product-search/conf-product_search.tar.gz",
         "--target-dir", str(tmp_path / "dags")],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    subprocess.run([BIN / "ruff", "format", "-q", str(tmp_path / "dags")], check=True)

    assert (tmp_path / "dags" / DAG.name).read_text() == DAG.read_text(), (
        "The pipelines or the template changed: run `make airflow-dag`."
    )


def test_each_stage_is_one_task_after_the_stages_it_reads():
    tree = ast.parse(DAG.read_text())
    # run_kedro(namespaces=["training"]), one in each task
    stages = [
        call.keywords[0].value.elts[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "run_kedro"
    ]
    # tasks["data-generation"] >> tasks["training"]
    edges = {
        (edge.left.slice.value, edge.right.slice.value)
        for edge in ast.walk(tree)
        if isinstance(edge, ast.BinOp) and isinstance(edge.op, ast.RShift)
    }

    assert sorted(stages) == sorted(
        ["data_generation", "training", "evaluation", "deployment"]
    )
    assert edges == {
        ("data-generation", "training"),
        ("data-generation", "evaluation"),
        ("training", "evaluation"),
        ("data-generation", "deployment"),
        ("training", "deployment"),
        ("evaluation", "deployment"),
    }
