"""The project's catalog configuration, read as `kedro run` reads it."""

from __future__ import annotations

from pathlib import Path

from kedro.config import OmegaConfigLoader

from product_search.pipelines.evaluation import create_pipeline as evaluation

ROOT = Path(__file__).parents[1]


def _config(key: str, env: str = "local") -> dict:
    return OmegaConfigLoader(
        str(ROOT / "conf"), base_env="base", default_run_env="local", env=env
    )[key]


def _catalog_config(env: str = "local") -> dict:
    return _config("catalog", env)


def test_the_environment_reaches_nodes_and_datasets_through_credentials(
    monkeypatch,
):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/d")
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)

    credentials = _config("credentials")
    catalog = _catalog_config()

    assert credentials["anthropic"] == {
        "api_key": "sk-ant-test", "auth_token": None, "base_url": None,
    }  # fmt: skip
    assert credentials["db"] == {"con": "postgresql://u@h/d"}
    assert catalog["anthropic_credentials"]["credentials"] == "anthropic"
    for name, entry in catalog.items():
        if entry.get("type") == "product_search.datasets.PgVectorTableDataset":
            assert entry.get("credentials") == "db", name


def test_without_the_variables_the_credentials_are_null(monkeypatch):
    for name in ("ANTHROPIC_API_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)

    credentials = _config("credentials")

    assert credentials["anthropic"]["api_key"] is None
    assert credentials["db"] == {"con": None}  # the embedded server


def test_every_evaluation_dataset_is_declared():
    # An undeclared one is a MemoryDataset: a partial run cannot load it and
    # has to recompute it, which means encoding the catalog with each model.
    declared = set(_catalog_config())
    pipeline = evaluation()
    undeclared = {
        name for name in pipeline.datasets() if not name.startswith("params:")
    } - declared
    assert undeclared == set()
    assert {
        "evaluation_set",
        "baseline_evaluation",
        "fine_tuned_evaluation",
        "search_mode_metrics",
        "onnx_metrics",
    } <= declared


def test_the_report_can_be_rewritten_without_the_models():
    declared = set(_catalog_config())
    from_report = evaluation().from_nodes("evaluation.write_report_node")

    assert [node.name for node in from_report.nodes] == ["evaluation.write_report_node"]
    assert {
        name for name in from_report.inputs() if not name.startswith("params:")
    } <= declared
