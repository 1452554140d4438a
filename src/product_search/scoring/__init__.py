"""Scoring models and search modes: the evaluation set, a model's evaluation by
exact search, and queries run through the search table as ``/search`` runs
them. The evaluation pipeline and the deployment's promotion gate both score
with it."""

from product_search.scoring.contracts import EvaluationSet, ModelEvaluation
from product_search.scoring.evaluation_set import build_evaluation_set, require_columns
from product_search.scoring.models import evaluate_model
from product_search.scoring.search_runs import search_mode_runs, search_run

__all__ = [
    "EvaluationSet",
    "ModelEvaluation",
    "build_evaluation_set",
    "evaluate_model",
    "require_columns",
    "search_mode_runs",
    "search_run",
]
