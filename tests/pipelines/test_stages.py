"""The four stages run as the Airflow DAG runs them, each `kedro run
--namespaces=<stage>` in its own process, give the outputs of one `kedro run`:
the stages meet only in datasets the catalog persists.

Both runs start from nothing on the test environment, each with its own
output folder, MLflow store and database on the shared test server. What may
differ, and is left out of the comparison: the output folder and the Kedro
version in a model's name, timestamps and durations. The models are trained on
CPU from fixed seeds: they are compared byte for byte.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kedro.framework.project import configure_project
from sqlalchemy import make_url, text

from product_search.datasets import PgVectorTableDataset
from product_search.pipeline_registry import register_pipelines
from tests import pg

ROOT = Path(__file__).parents[2]
STAGES = ("data_generation", "training", "evaluation", "deployment")
# The search tables: the deployed one and the evaluation's, one per model.
TABLES = ("product_embeddings", "evaluation_base", "evaluation_fine_tuned")
# Kedro's version of a versioned dataset (a model's name is `path@version`).
KEDRO_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z")
# Timestamps and durations: `decided_at`, `created_at`, `wall_time_s`,
# `pairs_per_s`, `index_seconds`, and a table's version (when it was saved).
CLOCK_KEY = re.compile(r"(_at|_seconds|_time_s|_per_s)$|^version$")
# The same durations in the report and the model cards: "3.3 s", "19.5 pairs/s".
DURATION = re.compile(r"\d+(\.\d+)? (s|seconds|pairs/s)\b")
# The shard cache (search/shards.py): folders and files named by fingerprints.
SHARDS = "07_model_output/embedding_shards/"
SHARD_NAME = re.compile(r"(?<=-)[0-9a-f]{12,20}\b")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """A run's copy of conf/, its output folder and its database."""

    base: Path
    database_url: str

    @property
    def out(self) -> Path:
        return self.base / "out"


def _new_run(base: Path) -> Run:
    """A copy of conf/ whose test environment writes under ``base``, and a
    fresh database for it."""
    conf = base / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "test" / "globals.yml").write_text(f"out: {base / 'out'}\n")
    mlflow_file = conf / "test" / "mlflow.yml"
    mlflow = yaml.safe_load(mlflow_file.read_text())
    mlflow["server"]["mlflow_tracking_uri"] = f"sqlite:///{base / 'mlflow.db'}"
    mlflow["tracking"]["experiment"]["create_experiment_kwargs"] = {
        "artifact_location": str(base / "mlflow_artifacts")
    }
    mlflow_file.write_text(yaml.safe_dump(mlflow))

    name = pg.unique_name("run")
    admin = pg.engine().execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    url = make_url(pg.server_url()).set(database=name)
    return Run(base, url.render_as_string(hide_password=False))


def _kedro_run(run: Run, *args: str) -> float:
    """`kedro run --env=test` into ``run``'s folder and database; its seconds."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
    for name in ("ANTHROPIC_API_KEY", "KEDRO_ENV"):
        env.pop(name, None)
    env["DATABASE_URL"] = run.database_url
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--env=test",
         f"--conf-source={run.base / 'conf'}", *args,
         # Training is reproducible on CPU, not on every GPU.
         "--params=training.device=cpu,reranker.device=cpu"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return time.perf_counter() - started


def _without_clock(value: Any, out: Path) -> Any:
    """``value`` with the output folder and Kedro versions in its strings
    replaced by placeholders, and its timestamps and durations left out."""
    if isinstance(value, dict):
        return {
            key: _without_clock(item, out)
            for key, item in value.items()
            if not CLOCK_KEY.search(str(key))
        }
    if isinstance(value, list):
        return [_without_clock(item, out) for item in value]
    if isinstance(value, str):
        return KEDRO_VERSION.sub("<version>", value.replace(str(out), "<out>"))
    return value


def _outputs(out: Path) -> dict[str, Any]:
    """Every file under ``out`` by its path, versions as placeholders: JSON
    parsed, text normalised, anything else as bytes."""
    files: dict[str, Any] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        name = KEDRO_VERSION.sub("<version>", path.relative_to(out).as_posix())
        if name.startswith(SHARDS):
            # A cache named by each model's fingerprint, which holds its
            # versioned path: the same shards under another name per run.
            name = SHARD_NAME.sub("<fingerprint>", name)
            files[name] = files.get(name, 0) + 1
            continue
        if path.suffix == ".json":
            files[name] = _without_clock(json.loads(path.read_text()), out)
        elif path.suffix in {".csv", ".md"}:
            content = DURATION.sub("<duration>", path.read_text())
            files[name] = _without_clock(content, out)
        else:
            files[name] = path.read_bytes()
    return files


def _tables(run: Run) -> dict[str, tuple[dict, list[dict]]]:
    """Each search table's version (its clock left out) and rows."""
    tables = {}
    for name in TABLES:
        dataset = PgVectorTableDataset(
            table_name=name, dimension=384, credentials={"con": run.database_url}
        )
        table = dataset.load()
        info = _without_clock(table.info(), run.out)
        rows = [
            {**row, "model": _without_clock(row["model"], run.out)}
            for row in table.frame().to_dict("records")
        ]
        tables[name] = (info, rows)
        dataset.release()
    return tables


def test_the_stages_run_in_the_dags_order():
    configure_project("product_search")
    groups = register_pipelines()["__default__"].group_nodes_by("namespace")
    assert sorted(group.name for group in groups) == sorted(STAGES)
    for group in groups:
        for dependency in group.dependencies:
            assert STAGES.index(dependency) < STAGES.index(group.name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Run, Run]:
    """`kedro run --env=test` once, then its four stages one process each."""
    one, staged = (
        _new_run(tmp_path_factory.mktemp(name)) for name in ("one", "staged")
    )
    logger.info("kedro run --env=test: %.0f s", _kedro_run(one))
    seconds = sum(_kedro_run(staged, f"--namespaces={stage}") for stage in STAGES)
    logger.info("kedro run --env=test, stage by stage: %.0f s", seconds)
    return one, staged


def test_stage_by_stage_gives_the_outputs_of_one_run(runs):
    one, staged = (_outputs(run.out) for run in runs)

    assert sorted(staged) == sorted(one)
    for name in one:
        assert staged[name] == one[name], name
    # Not a vacuous comparison: the models, the metrics and the release.
    model = "06_models/fine_tuned_model/<version>/fine_tuned_model/model.safetensors"
    assert len(one[model]) > 10_000_000
    assert "06_models/reranker/<version>/reranker/model.safetensors" in one
    assert one["08_reporting/metrics.json/<version>/metrics.json"]["metrics"]
    assert one["08_reporting/release_manifest.json"]["model"] == (
        "<out>/06_models/fine_tuned_model@<version>"
    )


def test_stage_by_stage_deploys_the_rows_of_one_run(runs):
    one, staged = (_tables(run) for run in runs)

    for name in TABLES:
        (one_info, one_rows), (staged_info, staged_rows) = one[name], staged[name]
        assert staged_info == one_info, name
        assert len(staged_rows) == len(one_rows) == 40  # max_products in conf/test
        for one_row, staged_row in zip(one_rows, staged_rows, strict=True):
            assert np.array_equal(staged_row.pop("embedding"), one_row.pop("embedding"))
            assert staged_row == one_row
