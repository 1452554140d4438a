"""The release manifest: what the evaluation lets the deployment ship."""

from __future__ import annotations

import pytest
from kedro.io.core import DatasetError

from product_search.datasets import ContractDataset
from product_search.pipelines.evaluation.nodes import (
    release_manifest,
    reranker_release,
)
from product_search.release import (
    FusionChoice,
    ReleaseManifest,
    RerankerRelease,
    Verdict,
)
from product_search.scoring.modes import (
    RerankerResult,
    RerankerVariant,
    SearchModeResults,
)
from product_search.search.table import SearchOptions

# The evaluation's verdict on a reranker: it ships.
RERANKER = RerankerResult(
    model="data/06_models/reranker@2026-11-27T08.00.00.000Z", top_n=50,
    text_columns=["title", "brand"], weight=0.4, deploy=True, reason="Better.",
)  # fmt: skip


def _variant(serve: str, top_n: int) -> RerankerVariant:
    return RerankerVariant(
        metric="ndcg@10", queries="real queries", fp32=0.6, int8=0.599,
        int8_change=-0.001, max_int8_loss=0.002, serve=serve, top_n=top_n,
    )  # fmt: skip


def test_only_a_reranker_that_does_no_harm_is_released(caplog):
    assert reranker_release(RERANKER).record() == {
        "model": RERANKER.model, "top_n": 50, "text_columns": ["title", "brand"],
        "weight": 0.4, "variant": "fp32",
    }  # fmt: skip
    # The evaluation's int8 check chose the variant (and, for fp32, fewer hits).
    checked = RERANKER.model_copy(update={"variant": _variant("int8", 50)})
    assert reranker_release(checked).record()["variant"] == ("int8")
    slow = RERANKER.model_copy(update={"variant": _variant("fp32", 20)})
    assert reranker_release(slow).record()["top_n"] == 20
    harmful = RERANKER.model_copy(
        update={"deploy": False, "reason": "It is significantly worse."}
    )
    assert reranker_release(harmful).record() == {
        "reason": "Not deployed: It is significantly worse."
    }
    assert "not deployed: It is significantly worse." in caplog.text
    assert reranker_release(None).record() == {
        "reason": "No reranker was trained (reranker.enabled: false)."
    }


VERDICT = Verdict(
    metric="ndcg@10", queries="real queries", serving_model="base",
    candidate_model="tuned", serving_value=0.5, candidate_value=0.6, delta=0.1,
    direction="better", significant=True, min_gain=None, promote=True,
    reason="Better.", comparison={"wilcoxon_p_value": 0.001},
)  # fmt: skip
FUSION = FusionChoice(
    model="tuned", options=SearchOptions(fusion="weighted"), tuned=False,
    reason="the default stays", judged_by="6 log queries",
)  # fmt: skip


def _modes(reranker: RerankerResult | None = None) -> SearchModeResults:
    """Search-mode results holding only what the manifest reads of them."""
    return SearchModeResults(
        metrics=["ndcg@10"], k=10, options={"fine_tuned": FUSION.options},
        tuning={"fine_tuned": FUSION}, test_queries={}, reranker=reranker,
        lane_check={"queries": "test_queries", "metric": "ndcg@10",
                    "served": "hybrid_fine_tuned", "below": [], "comparisons": {}},
    )  # fmt: skip


def test_the_manifest_round_trips_through_its_dataset(tmp_path):
    manifest = release_manifest(VERDICT, FUSION, _modes(RERANKER))
    dataset = ContractDataset(
        filepath=str(tmp_path / "release_manifest.json"),
        contract="product_search.release.ReleaseManifest",
    )
    dataset.save(manifest)

    loaded = dataset.load()
    assert loaded == manifest
    assert isinstance(loaded, ReleaseManifest)
    assert (loaded.model, loaded.fusion.options.fusion) == ("tuned", "weighted")
    assert loaded.reranker.record()["weight"] == 0.4


def test_a_weight_0_reranker_is_not_in_the_manifest_and_it_says_why():
    unused = RERANKER.model_copy(
        update={
            "deploy": False,
            "reason": "Its weight against the hybrid score is 0 (the default stays).",
        }
    )
    manifest = release_manifest(VERDICT, FUSION, _modes(unused))
    assert manifest.reranker.model is None
    assert manifest.reranker.record() == {
        "reason": "Not deployed: Its weight against the hybrid score is 0 "
        "(the default stays)."
    }
    with pytest.raises(ValueError, match="weight 0 would not change the order"):
        RerankerRelease(model="r", top_n=20, text_columns=["title"], weight=0.0,
                        variant="int8", reason="made up")  # fmt: skip


def test_a_manifest_must_name_one_model():
    with pytest.raises(ValueError, match="its fusion was tuned for other"):
        release_manifest(
            VERDICT, FUSION.model_copy(update={"model": "other"}), _modes()
        )


def test_a_stale_or_edited_manifest_fails_on_load(tmp_path):
    path = tmp_path / "release_manifest.json"
    dataset = ContractDataset(
        filepath=str(path), contract="product_search.release.ReleaseManifest"
    )
    dataset.save(release_manifest(VERDICT, FUSION, _modes()))
    path.write_text(path.read_text().replace('"verdict"', '"verdikt"'))
    with pytest.raises(DatasetError, match="not a valid ReleaseManifest"):
        dataset.load()
