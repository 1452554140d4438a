"""Project settings. See https://docs.kedro.org/en/stable/configure/ for the defaults."""

from pathlib import Path

from product_search.hooks import ClearErrorHooks, ServiceHintHooks

HOOKS = (ServiceHintHooks(), ClearErrorHooks())

# src/product_search/settings.py -> the project's root.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment overrides single parameters (e.g. `training.epochs`) and
    # single MLflow settings, not whole sections.
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    # ${project:data/mlflow.db}: a path inside the project wherever Kedro runs
    # from (a notebook runs in notebooks/), for settings that no catalog
    # dataset resolves against the project, such as a SQLite tracking URI.
    "custom_resolvers": {"project": lambda path: (PROJECT_ROOT / path).as_posix()},
}
