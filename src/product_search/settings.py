"""Project settings. See https://docs.kedro.org/en/stable/configure/ for the defaults."""

from product_search.hooks import ClearErrorHooks, ServiceHintHooks

HOOKS = (ServiceHintHooks(), ClearErrorHooks())

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment overrides single parameters (e.g. `training.epochs`), not
    # whole sections.
    "merge_strategy": {"parameters": "soft"},
}
