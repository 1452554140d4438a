"""The report's sections on what the run measured: results, the ONNX backend,
key findings, the deployment verdict, search examples and real queries."""

from __future__ import annotations

from typing import Any

from .formatting import (
    _cell,
    _change_sentence,
    _delta,
    _pct,
    _share,
    _significance_sentence,
    _table,
    _value,
    metric_label,
)


def _results_table(changes: dict[str, Any], primary: str | None) -> list[str]:
    rows = [
        (
            f"**{metric_label(name)}**" if name == primary else metric_label(name),
            _value(c["baseline"]),
            _value(c["fine_tuned"]),
            _delta(c["delta"]),
            _pct(c["pct_change"]),
        )
        for name, c in changes.items()
    ]
    return _table(("Metric", "Baseline", "Fine-tuned", "Delta", "% change"), rows)


def _results(metrics: dict[str, Any]) -> list[str]:
    return [
        "## Results",
        "",
        f"Held-out synthetic queries: {metrics['test_queries']:,}; catalog: "
        f"{metrics['corpus_size']:,} products. Primary metric in bold.",
        "",
        *_results_table(metrics["metrics"], metrics["primary_metric"]),
        "",
    ]


def _onnx(metrics: dict[str, Any]) -> list[str]:
    onnx = metrics.get("onnx")
    if not onnx:
        return []
    variants = onnx["variants"]
    sources = [("held-out queries", "metrics")]
    if any(v["real_queries"] for v in variants.values()):
        sources.append(("real queries", "real_queries"))
    rows = []
    for label, key in sources:
        for name, torch_change in next(iter(variants.values()))[key].items():
            cells = [
                f"{metric_label(name)} ({label})",
                _value(torch_change["torch"]),
            ]
            for variant in variants.values():
                change = variant[key][name]
                cells.append(f"{_value(change['onnx'])} ({change['delta']:+.5f})")
            rows.append(cells)
    return [
        "## ONNX Runtime backend",
        "",
        f"`{onnx['model']}` exported to ONNX and scored by the same code as in "
        "torch; the service serves the export with `SEARCH_BACKEND=auto|onnx`. "
        "In brackets: the change from torch.",
        "",
        *_table(("Metric", "torch", *(f"ONNX {v}" for v in variants)), rows),
        "",
    ]


def _findings(metrics: dict[str, Any]) -> list[str]:
    primary = metrics["primary_metric"]
    changes, sig = metrics["metrics"], metrics["significance"]
    change = changes[primary]
    findings = [
        f"{_change_sentence(metric_label(primary), change)}. "
        + _significance_sentence(sig),
        f"Per query, {sig['improved']:,} of {sig['queries']:,} test queries rank "
        f"their product higher with the fine-tuned model, {sig['worsened']:,} lower "
        f"and {sig['unchanged']:,} the same.",
    ]
    if "accuracy@1" in changes:
        top1 = changes["accuracy@1"]
        findings.append(
            f"The right product is the first result for "
            f"{_share(top1['fine_tuned'])} of queries, against "
            f"{_share(top1['baseline'])} before."
        )
    recalls = [name for name in changes if name.startswith("recall@")]
    if recalls:
        widest = max(recalls, key=lambda name: int(name.partition("@")[2]))
        k = widest.partition("@")[2]
        findings.append(
            f"The right product is in the top {k} for "
            f"{_share(changes[widest]['fine_tuned'])} of queries "
            f"(baseline {_share(changes[widest]['baseline'])})."
        )
    if change["delta"] < 0 and sig["significant"]:
        findings.append(
            "The fine-tuned model ranks the right products worse than the base "
            "model: keep the base model in production."
        )
    worse = [metric_label(name) for name, c in changes.items() if c["delta"] < 0]
    if worse and change["delta"] > 0:
        findings.append(f"Not every metric improved: {', '.join(worse)} fell.")
    if change["baseline"] >= 0.9:
        findings.append(
            f"The baseline already scores {change['baseline']:.3f}: these test "
            "queries are easy for it and leave little room to improve."
        )
    real = metrics.get("real_queries")
    if real:
        headline = real["significance"]["metric"]
        real_change = real["metrics"][headline]
        findings.append(
            f"On {real['queries']:,} real shopper queries, graded "
            f"{_change_sentence(metric_label(headline), real_change)}. "
            + _significance_sentence(real["significance"])
        )
        if sig["significant"] and change["delta"] > 0:
            if real_change["delta"] < 0 and real["significance"]["significant"]:
                findings.append(
                    "The gain on synthetic queries does not carry over: real shopper "
                    "queries got worse. Do not deploy this model on the synthetic "
                    "figures alone."
                )
            elif not real["significance"]["significant"]:
                findings.append(
                    "The gain on synthetic queries is not confirmed on real shopper "
                    "queries: the synthetic figures likely overstate what shoppers "
                    "will notice."
                )
    return ["## Key findings", "", *(f"- {finding}" for finding in findings), ""]


def _deployment(metrics: dict[str, Any]) -> list[str]:
    verdict = metrics.get("promotion")
    if not verdict:
        return []
    outcome = (
        f"`{verdict['candidate_model']}` passes the promotion gate: the deployment "
        "pipeline will serve it."
        if verdict["promote"]
        else f"`{verdict['candidate_model']}` does not pass the promotion gate: the "
        f"deployment pipeline keeps `{verdict['serving_model']}` serving (set "
        "`promotion.force: true` to deploy it anyway)."
    )
    return [
        "## Deployment",
        "",
        f"{outcome} {verdict['reason']} A later run compares its candidate with "
        "the model that serves by then.",
        "",
    ]


def _examples(
    examples: tuple[list[dict[str, Any]], list[dict[str, Any]]], top_k: int
) -> list[str]:
    baseline, fine_tuned = examples
    if not baseline:
        return []
    lines = [
        "## Search examples",
        "",
        f"Top {top_k} products (title, cosine score) for sample shopper queries.",
        "",
    ]
    for base, tuned in zip(baseline, fine_tuned, strict=True):
        cells = [
            [f"{hit['title']} ({hit['score']:.3f})" for hit in side["results"]]
            for side in (base, tuned)
        ]
        depth = max(len(column) for column in cells)
        rows = [
            (
                rank + 1,
                *(column[rank] if rank < len(column) else "" for column in cells),
            )
            for rank in range(depth)
        ]
        lines += [
            f"**\u201c{_cell(base['query'])}\u201d**",
            "",
            *_table(("#", "Baseline", "Fine-tuned"), rows),
            "",
        ]
    return lines


def _real_queries(metrics: dict[str, Any]) -> list[str]:
    real = metrics.get("real_queries")
    lines = ["## Real shopper queries", ""]
    if not real:
        return [
            *lines,
            "Skipped: no human relevance judgments were supplied. To measure quality "
            "on real queries, put `data/01_raw/judgments/queries.csv` (query_id, "
            "query) and `data/01_raw/judgments/qrels.csv` (query_id, product_id, "
            "relevance: 0 = irrelevant, higher = more relevant) beside the catalog.",
            "",
        ]
    skipped = real["skipped_without_judgments"] + real["skipped_without_relevant"]
    notes = []
    if skipped:
        notes.append(
            f"{skipped:,} judged queries were skipped (no judgment, or no product "
            "judged relevant)"
        )
    if real["judged_products_not_in_catalog"]:
        notes.append(
            f"{real['judged_products_not_in_catalog']:,} judgments name products "
            "missing from the catalog; no model can retrieve those"
        )
    return [
        *lines,
        f"{real['queries']:,} queries with {real['judgments']:,} human judgments, "
        "retrieved against the whole catalog. NDCG uses the graded judgments "
        "(linear gain); MRR and Recall count any relevance above 0 as relevant "
        "(ranx)." + (f" Note: {'; '.join(notes)}." if notes else ""),
        "",
        *_results_table(real["metrics"], real["significance"]["metric"]),
        "",
        _significance_sentence(real["significance"]),
        "",
    ]
