"""Project hooks."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline

logger = logging.getLogger(__name__)


class ServiceHintHooks:
    """After a run that deployed the vector table, say how to serve it."""

    @hook_impl
    def after_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline
    ) -> None:
        if "product_embeddings" not in pipeline.all_outputs():
            return
        env = run_params.get("env")
        logger.info(
            "The product table is deployed. Start the search service with: "
            "python -m product_search.service%s",
            f" --env {env}" if env else "",
        )
