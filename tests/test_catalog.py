"""The project's catalog configuration, read as `kedro run` reads it."""

from __future__ import annotations

from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.framework.project import configure_project
from kedro.io import DataCatalog, MemoryDataset

from product_search.pipeline_registry import register_pipelines
from product_search.pipelines.evaluation import create_pipeline as evaluation
from product_search.settings import CONFIG_LOADER_ARGS

ROOT = Path(__file__).parents[1]


def _config(key: str, env: str = "local") -> dict:
    return OmegaConfigLoader(
        str(ROOT / "conf"),
        env=env,
        # kedro-mlflow adds its pattern when a session starts.
        config_patterns={"mlflow": ["mlflow*", "mlflow*/**"]},
        **CONFIG_LOADER_ARGS,
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


def _stage_datasets() -> dict[str, set[str]]:
    """Each dataset that one stage (a pipeline namespace, an Airflow task)
    writes and another reads, with the stages that read it."""
    configure_project("product_search")
    default = register_pipelines()["__default__"]
    stages = {node.namespace.split(".")[0] for node in default.nodes}
    crossing: dict[str, set[str]] = {}
    for writer in stages:
        written = default.only_nodes_with_namespaces([writer]).all_outputs()
        for reader in stages - {writer}:
            read = default.only_nodes_with_namespaces([reader]).all_inputs()
            for name in written & read:
                crossing.setdefault(name, set()).add(reader)
    return crossing


def test_every_dataset_between_two_stages_is_persisted(monkeypatch):
    # Each stage is its own process (`kedro run --namespaces`, one Airflow
    # task): what one stage hands another in memory would be lost.
    monkeypatch.delenv("DATABASE_URL", raising=False)
    catalog = DataCatalog.from_config(_catalog_config(), _config("credentials"))
    crossing = _stage_datasets()

    # get() also resolves the catalog's dataset factory patterns, and gives
    # None for a name that neither an entry nor a pattern declares.
    datasets = {name: catalog.get(name) for name in crossing}
    assert {name for name, ds in datasets.items() if ds is None} == set()
    assert {
        name for name, ds in datasets.items() if isinstance(ds, MemoryDataset)
    } == set()
    assert crossing["fine_tuned_model"] == {"evaluation", "deployment"}
    assert crossing["release_manifest"] == {"deployment"}
    assert {"products", "train_pairs", "test_queries", "reranker"} <= set(crossing)


# Dataset types that read and write through fsspec, so an s3:// path works.
FSSPEC_TYPES = ("pandas.", "json.", "text.", "matplotlib.", "product_search.datasets.ContractDataset")  # fmt: skip


def _paths(entry: dict) -> list[str]:
    """The paths a catalog entry writes to (its own, or its wrapped dataset's)."""
    paths = [
        str(entry[key])
        for key in ("filepath", "path", "model_name_or_path")
        if key in entry
    ]
    return paths + (_paths(entry["dataset"]) if "dataset" in entry else [])


def test_the_prod_catalog_builds_without_connecting(monkeypatch):
    for name in ("DATABASE_URL", "CATALOG_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    config = _catalog_config("prod")
    credentials = _config("credentials", "prod") | {
        # Hosts that do not resolve: building the catalog must not connect.
        "catalog_db": {"con": "postgresql+psycopg://reader@catalog.invalid/shop"},
        "db": {"con": "postgresql+psycopg://search@search.invalid/search"},
    }
    catalog = DataCatalog.from_config(config, credentials)
    for name in catalog.keys():
        assert catalog.get(name) is not None, name

    configure_project("product_search")
    written = register_pipelines()["__default__"].all_outputs()
    volume = _config("globals", "prod")["volume"]
    for name in written & set(config):
        entry = config[name]
        for path in _paths(entry):
            # Nothing a task writes stays on its worker's own disk.
            assert path.startswith(("s3://", f"{volume}/")), (name, path)
            if path.startswith("s3://"):
                assert entry["type"].startswith(FSSPEC_TYPES), (name, path)
    assert config["products"]["filepath"].startswith("s3://")
    assert config["fine_tuned_model"]["model_name_or_path"].startswith(volume)
    assert config["raw_products"]["type"] == "pandas.SQLQueryDataset"
    assert credentials["db"]["con"].endswith("search.invalid/search")
    # kedro-mlflow reads the worker's MLFLOW_TRACKING_URI.
    assert _config("mlflow", "prod")["server"]["mlflow_tracking_uri"] is None


def test_hnsw_settings_are_set_per_environment():
    """m, ef_construction and the column's type come with the catalog entry,
    ef_search, filter_exact_rows and lexical_bound with the search options: conf/prod replaces
    them for 1M products and keeps the rest of base's search options
    (docs/search.md, HNSW at 1M products)."""
    from product_search.search.table import SearchOptions  # noqa: PLC0415

    base, prod = _catalog_config("base"), _catalog_config("prod")
    assert base["product_embeddings"]["index_args"] == {"m": 16, "ef_construction": 64}
    assert base["product_embeddings"].get("vector_type", "vector") == "vector"
    entry = prod["product_embeddings"]
    assert entry["index_args"] == {"m": 12, "ef_construction": 128}
    assert entry["vector_type"] == "halfvec"
    assert entry["save_args"]["max_parallel_maintenance_workers"] > 0
    base_options = _config("parameters", "base")["search"]["options"]
    prod_options = _config("parameters", "prod")["search"]["options"]
    assert base_options["ef_search"] == 100
    changed = {"ef_search", "filter_exact_rows", "lexical_bound"}
    assert prod_options == base_options | {k: prod_options[k] for k in changed}
    assert prod_options["ef_search"] > base_options["ef_search"]
    assert prod_options["filter_exact_rows"] > base_options["filter_exact_rows"]
    assert SearchOptions(**prod_options).filter_exact_rows == 20_000
    assert (base_options["lexical_bound"], prod_options["lexical_bound"]) == (0, 10_000)
