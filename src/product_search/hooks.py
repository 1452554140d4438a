"""Project hooks."""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io.core import DatasetError
from kedro.pipeline import Pipeline

from product_search.errors import PromotionRefusedError, UserError
from product_search.providers import QueryGenerationError

logger = logging.getLogger(__name__)

# Raised by the project on purpose, with a message that says what to fix. A
# plain ValueError (or KeyError, ...) is a bug of ours and keeps its traceback.
CLEAR_ERRORS = (UserError, QueryGenerationError, PromotionRefusedError)
# Our dataset classes check their configuration and data up front and word the
# DatasetError for the user (STYLE.md); Kedro's own DatasetErrors only wrap
# another error, so they count only when what they wrap does.
OUR_DATASETS = "/product_search/datasets/"


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


def raised_on_purpose(error: BaseException | None) -> bool:
    """Whether ``error``, or one it was raised from, is a clear error that the
    project's own code raised for bad input or a rejected call.

    Only ``raise ... from`` links are followed: an error raised while another
    was being handled (``__context__``) is a new problem, not a rewording."""
    while error is not None:
        frames = traceback.extract_tb(error.__traceback__)
        raised_in = frames[-1].filename.replace("\\", "/") if frames else ""
        if (isinstance(error, CLEAR_ERRORS) and "/product_search/" in raised_in) or (
            isinstance(error, DatasetError) and OUR_DATASETS in raised_in
        ):
            return True
        error = error.__cause__
    return False


class ClearErrorHooks:
    """A run that stops on a clear error of ours (a missing column, a rejected
    API key) ends with that message, not with a page of traceback."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        if getattr(sys.excepthook, "shows_clear_errors", False):
            return
        previous = sys.excepthook

        def excepthook(
            kind: type[BaseException], error: BaseException, tb: TracebackType | None
        ) -> None:
            if raised_on_purpose(error):
                sys.stderr.write(f"\nError: {error}\n")
            else:
                previous(kind, error, tb)

        excepthook.shows_clear_errors = True  # type: ignore[attr-defined]
        sys.excepthook = excepthook
