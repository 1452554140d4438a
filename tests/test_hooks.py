"""Project hooks: a clear error ends a run with its message, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from kedro.io.core import DatasetError

from product_search import promotion
from product_search.errors import UserError
from product_search.hooks import ClearErrorHooks, raised_on_purpose
from product_search.pipelines.data_generation.products import prepare_products

ROOT = Path(__file__).parents[1]


def _caught(call) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_our_clear_errors_are_recognised_even_when_wrapped():
    ours = _caught(lambda: prepare_products(pd.DataFrame(), {}))
    assert raised_on_purpose(ours)

    def wrapped():
        try:
            prepare_products(pd.DataFrame(), {})
        except ValueError as error:
            raise DatasetError("Failed while saving data") from error

    assert raised_on_purpose(_caught(wrapped))


def test_a_refused_promotion_is_a_clear_error():
    from product_search.pipelines.deployment.nodes import promoted_model  # noqa: PLC0415

    refused = {"deploy": False, "reason": "Worse.", "serving_model": "base"}
    assert raised_on_purpose(_caught(lambda: promoted_model(None, refused)))


def test_other_errors_keep_their_traceback():
    assert not raised_on_purpose(_caught(lambda: int("not a number")))
    assert not raised_on_purpose(_caught(lambda: 1 / 0))


def test_our_internal_value_errors_keep_their_traceback():
    # Raised in product_search/, but a broken precondition between our own
    # functions, not bad input: the traceback is what finds the bug.
    bug = _caught(lambda: promotion.paired_significance([0.1], [0.1, 0.2]))
    assert type(bug) is ValueError
    assert not raised_on_purpose(bug)

    def fails_while_reporting():
        try:
            prepare_products(pd.DataFrame(), {})
        except UserError:
            {}["missing"]

    assert not raised_on_purpose(_caught(fails_while_reporting))


def test_the_hook_prints_a_user_error_in_one_line_and_passes_bugs_on(
    monkeypatch, capsys
):
    passed_on = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: passed_on.append(args[1]))
    ClearErrorHooks().after_context_created(context=None)

    user_error = _caught(lambda: prepare_products(pd.DataFrame(), {}))
    sys.excepthook(type(user_error), user_error, user_error.__traceback__)
    bug = _caught(lambda: promotion.paired_significance([0.1], [0.1, 0.2]))
    sys.excepthook(type(bug), bug, bug.__traceback__)

    assert capsys.readouterr().err == f"\nError: {user_error}\n"
    assert "\n" not in str(user_error)
    assert passed_on == [bug]  # to Python's hook, which prints the traceback


def test_kedro_run_with_a_bad_column_mapping_ends_with_the_message():
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipeline=data_generation",
         "--env=test", "--params=data_generation.columns.title=name"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert output.rstrip().endswith(
        "Error: The product catalog lacks the column(s) 'name' (for title). It has: "
        "['product_id', 'title', 'brand', 'category', 'price', 'description']. Map "
        "your column names under `data_generation.columns` ({our_name: your_name}, "
        "or null for an optional column you do not have)."
    )
    assert "Traceback" not in output
