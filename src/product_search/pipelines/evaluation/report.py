"""The evaluation report (Markdown) and chart (matplotlib), built from the
``metrics`` of :func:`~.nodes.compare_models` and the run's other records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

LABELS = {"ndcg": "NDCG", "mrr": "MRR", "accuracy": "Accuracy", "recall": "Recall"}
LOSS_NAMES = {
    "mnrl": "MultipleNegativesRankingLoss",
    "cached_mnrl": "CachedMultipleNegativesRankingLoss",
}
BASELINE_COLOUR, FINE_TUNED_COLOUR = "#9aa5b1", "#1f6feb"
SEARCH_MODES = {
    "lexical": "Lexical (BM25)",
    "dense_base": "Dense, base model",
    "dense_fine_tuned": "Dense, fine-tuned model",
    "hybrid_base": "Hybrid, base model",
    "hybrid_fine_tuned": "Hybrid, fine-tuned model",
    "hybrid_rerank_fine_tuned": "Hybrid + rerank, fine-tuned model",
}
# Hybrid more than this below its better lane is called out in the report.
FUSION_TOLERANCE = 0.005
QUERY_SETS = {
    "test_queries": "Held-out synthetic queries",
    "real_queries": "Real shopper queries (graded)",
}


def metric_label(name: str) -> str:
    """``"ndcg@10"`` as ``"NDCG@10"``."""
    family, _, k = name.partition("@")
    return f"{LABELS.get(family, family)}@{k}"


def _value(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _delta(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}%"


def _count(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else "n/a"


def _share(x: float) -> str:
    return f"{100 * x:.1f}%"


def _p(x: float | None) -> str:
    """``"p = 0.012"``, ``"p < 0.001"`` or ``"p n/a"``."""
    if x is None:
        return "p n/a"
    return "p < 0.001" if x < 0.001 else f"p = {x:.3f}"


def _cell(text: Any) -> str:
    """Text that cannot break a Markdown table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _significance_sentence(significance: dict[str, Any]) -> str:
    if not significance["improved"] and not significance["worsened"]:
        return "No query's score changed, so there is no difference to test."
    ci = (
        f"95% bootstrap CI of the mean gain {significance['ci95_low']:+.4f} to "
        f"{significance['ci95_high']:+.4f}"
    )
    tests = (
        f"Wilcoxon signed-rank {_p(significance['wilcoxon_p_value'])}, "
        f"paired t-test {_p(significance['paired_t_p_value'])}"
    )
    if significance["wilcoxon_p_value"] is None:
        return f"Its significance could not be tested ({tests}; {ci})."
    if significance["significant"]:
        return f"The change is statistically significant ({tests}; {ci})."
    return (
        f"The change is not statistically significant at the "
        f"{significance['alpha']:.0%} level "
        f"({tests}; {ci}): treat it as no measurable difference."
    )


def _change_sentence(label: str, change: dict[str, Any]) -> str:
    if not change["delta"]:
        return f"{label} stayed at {change['baseline']:.4f}"
    direction = "rose" if change["delta"] > 0 else "fell"
    return (
        f"{label} {direction} from {change['baseline']:.4f} to "
        f"{change['fine_tuned']:.4f} ({_delta(change['delta'])}, "
        f"{_pct(change['pct_change'])})"
    )


def _distinct(frame: pd.DataFrame, column: str) -> str:
    """The distinct values of a column, joined: who wrote the queries, say."""
    values = (
        sorted(frame[column].dropna().astype(str).unique()) if column in frame else []
    )
    return ", ".join(values) or "unknown"


def _summary(metrics: dict[str, Any], history: dict[str, Any]) -> list[str]:
    primary = metrics["primary_metric"]
    change = metrics["metrics"][primary]
    pairs = history.get("train_pairs")
    trained_on = f" on {pairs:,} (query, product) pairs" if pairs else ""
    lines = ["## Summary", "", *_lane_warning(metrics.get("search_modes") or {})]
    lines += [
        f"We fine-tuned `{metrics['models']['baseline']}`{trained_on} and searched "
        f"a catalog of {metrics['corpus_size']:,} products with "
        f"{metrics['test_queries']:,} held-out shopper queries: "
        f"**{_change_sentence(metric_label(primary), change)}**. "
        + _significance_sentence(metrics["significance"]),
    ]
    real = metrics.get("real_queries")
    if real:
        headline = real["significance"]["metric"]
        lines += [
            "",
            f"On {real['queries']:,} real shopper queries with human judgments, graded "
            f"{_change_sentence(metric_label(headline), real['metrics'][headline])}. "
            + _significance_sentence(real["significance"]),
        ]
    return [*lines, ""]


def _lane_warning(modes: dict[str, Any]) -> list[str]:
    """The warning that opens the summary when /search serves significantly
    below one of its own lanes."""
    check = modes.get("lane_check") or {}
    lines = []
    for lane in check.get("below", []):
        c = check["comparisons"][lane]
        served = "hybrid + rerank" if "rerank" in check["served"] else "hybrid"
        lines += [
            f"> **Warning: `/search` ({served}) ranks significantly below its own "
            f"{lane} lane** on the {check['queries'].replace('_', ' ')}: "
            f"{metric_label(check['metric'])} {c['mean_delta']:+.4f} (Wilcoxon p = "
            f"{_p(c['wilcoxon_p_value'])}, 95% CI [{c['ci95_low']:+.4f}, "
            f"{c['ci95_high']:+.4f}]). Serve `mode: {lane}`, or widen the "
            "validation queries that tune the fusion (search.tuning).",
            "",
        ]
    return lines


def _system(metrics: dict[str, Any]) -> list[str]:
    return [
        "## The system",
        "",
        "Semantic product search that understands how shoppers phrase what they "
        "want. For every product in the catalog, a large language model writes "
        "realistic shopper search queries (specific, general, need-based and "
        "attribute-focused). Those (query, product) pairs fine-tune the sentence "
        f"embedding model `{metrics['models']['baseline']}` so that a query lands "
        "next to the products it should find. The fine-tuned model embeds every "
        "product into PostgreSQL with pgvector (HNSW index, cosine distance); a "
        "FastAPI service embeds the shopper's query and returns the nearest "
        "products. This report measures the one thing fine-tuning changes: how "
        "well the model ranks the right products for a query.",
        "",
    ]


def _methodology(
    metrics: dict[str, Any],
    history: dict[str, Any],
    generated_queries: pd.DataFrame,
    data_quality: dict[str, Any],
    split: dict[str, Any],
) -> list[str]:
    provider = _distinct(generated_queries, "provider")
    model = _distinct(generated_queries, "model")
    products = data_quality.get("products", {})
    kept_queries = data_quality.get("queries", {}).get("kept_queries")
    by_type = (
        ", ".join(
            f"{kind} {count:,}"
            for kind, count in generated_queries["query_type"].value_counts().items()
        )
        if "query_type" in generated_queries
        else ""
    )
    split_by = split.get("split_by", "query")
    test_size = split.get("test_size")
    share = f"{test_size:.0%}" if isinstance(test_size, float) else "a share"
    held_out = (
        "a random share of the queries (a product can have queries on both sides)"
        if split_by == "query"
        else "a random share of the products with all their queries (test products "
        "are never seen in training)"
    )
    sig = metrics["significance"]
    catalog = f"{metrics['corpus_size']:,} products"
    if products.get("input_rows"):
        catalog += f" (from {products['input_rows']:,} catalog rows"
        dropped = {k: v for k, v in products.get("dropped", {}).items() if v}
        catalog += f"; dropped: {dropped})" if dropped else ")"
    queries_line = f"{len(generated_queries):,} generated by `{provider}` (`{model}`)"
    if by_type:
        queries_line += f"; by type: {by_type}"
    if kept_queries is not None:
        queries_line += f"; {kept_queries:,} kept after filtering"
    sources = data_quality.get("query_sources") or {}
    by_source = sources.get("sources") or {}
    if by_source.get("log", {}).get("pairs"):
        log = data_quality.get("search_logs", {})
        queries_line += (
            f". From the shop's search log: {by_source['log']['queries']:,} queries "
            f"in {by_source['log']['pairs']:,} positive pairs and "
            f"{sources.get('hard_negatives', 0):,} hard negatives "
            f"({log.get('input_rows', 0):,} log rows; dropped: "
            f"{ {k: v for k, v in log.get('dropped', {}).items() if v} or 'none' })"
        )
    removed = {k: v for k, v in sources.get("removed_as_judged", {}).items() if v}
    if sources.get("judged_queries"):
        queries_line += (
            f". Leakage guard: training queries equal to one of the "
            f"{sources['judged_queries']:,} judged queries removed: "
            f"{removed or 'none'}"
        )
    return [
        "## Methodology",
        "",
        f"- **Catalog**: {catalog}. Each product is embedded from its title, "
        "brand, category and description.",
        f"- **Queries**: {queries_line}.",
        f"- **Split**: by {split_by}, {share} held out with "
        f"seed {split.get('seed', 'n/a')}: {held_out}. "
        f"{_count(history.get('train_pairs'))} training pairs, "
        f"{metrics['test_queries']:,} test queries.",
        "- **Retrieval task**: each test query is run against the whole catalog "
        "(cosine similarity); the product it was written for is its one relevant "
        "product. Metrics by sentence-transformers' `InformationRetrievalEvaluator`.",
        f"- **Statistics**: per-query {metric_label(sig['metric'])} of both models "
        "from the same rankings; Wilcoxon signed-rank test (paired t-test beside "
        f"it); percentile bootstrap 95% CI of the mean gain "
        f"({sig['bootstrap_samples']:,} resamples of the queries, seed {sig['seed']}).",
        f"- **Models**: baseline `{metrics['models']['baseline']}`, fine-tuned "
        f"`{metrics['models']['fine_tuned']}`.",
        "",
    ]


def _training(history: dict[str, Any]) -> list[str]:
    if not history:
        return [
            "## Fine-tuning configuration",
            "",
            "No training history was found.",
            "",
        ]
    params = history.get("parameters", {})
    steps = history.get("loss_by_step") or []
    loss = params.get("loss")
    rows = [
        ("Base model", history.get("base_model", "n/a")),
        ("Loss", LOSS_NAMES.get(loss, loss or "n/a") + " (in-batch negatives)"),
        ("Epochs", history.get("epochs", params.get("epochs", "n/a"))),
        ("Batch size", params.get("batch_size", "n/a")),
        ("Learning rate", params.get("learning_rate", "n/a")),
        ("Warmup ratio", params.get("warmup_ratio", "n/a")),
        ("Max sequence length", params.get("max_seq_length", "n/a")),
        ("Training pairs", history.get("train_pairs", "n/a")),
        *(
            (f"Pairs from {source}", count)
            for source, count in (
                history.get("pairs", {}).get("by_source") or {}
            ).items()
        ),
        ("Triplets with a logged negative", history.get("triplets", 0)),
        ("Optimizer steps", history.get("steps", "n/a")),
        ("Device", history.get("device", "n/a")),
    ]
    if "wall_time_s" in history:
        rows.append(("Wall time", f"{history['wall_time_s']:.1f} s"))
    if "pairs_per_s" in history:
        rows.append(("Throughput", f"{history['pairs_per_s']:.1f} pairs/s"))
    if steps:
        rows.append(
            (
                "Loss, first → last step",
                f"{steps[0]['loss']:.4f} → {steps[-1]['loss']:.4f}",
            )
        )
    return ["## Fine-tuning configuration", "", *_table(("Setting", "Value"), rows), ""]


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
                _value(torch_change["baseline"]),
            ]
            for variant in variants.values():
                change = variant[key][name]
                cells.append(f"{_value(change['fine_tuned'])} ({change['delta']:+.5f})")
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


def fusion_label(options: dict[str, Any]) -> str:
    if options["fusion"] == "rrf":
        how = f"reciprocal rank fusion (k = {options['rrf_k']})"
    else:
        how = "a weighted sum of min-max normalised scores"
    return (
        f"{how}, weights dense {options['dense_weight']:g} and lexical "
        f"{options['lexical_weight']:g}, {options['dense_depth']} dense and "
        f"{options['lexical_depth']} lexical candidates"
    )


def _search_modes(metrics: dict[str, Any]) -> list[str]:
    modes = metrics.get("search_modes")
    if not modes:
        return []
    names = modes["metrics"]
    lines = [
        "## Search modes",
        "",
        "Each query run through the search table in PostgreSQL exactly as "
        "`/search` runs it: lexical is BM25 over the analysed product text, dense "
        "the nearest vectors (HNSW), hybrid both lanes fused. Best value of each "
        "column in bold.",
        "",
        *_fusions(modes),
    ]
    for set_name, title in QUERY_SETS.items():
        per_mode = modes.get(set_name)
        if not per_mode:
            continue
        best = {name: max(v[name] for v in per_mode.values()) for name in names}
        rows = [
            (
                SEARCH_MODES.get(mode, mode),
                *(
                    f"**{values[name]:.4f}**"
                    if values[name] == best[name]
                    else f"{values[name]:.4f}"
                    for name in names
                ),
            )
            for mode, values in per_mode.items()
        ]
        lines += [
            f"**{title}**",
            "",
            *_table(("Mode", *(metric_label(name) for name in names)), rows),
            "",
            *_fusion_shortfalls(per_mode, names[0]),
        ]
    reranker = modes.get("reranker")
    if reranker:
        lines += [
            f"**Reranker** `{reranker['model']}` (reads "
            f"{', '.join(reranker['text_columns'])}; reranks the top "
            f"{reranker['top_n']} hybrid hits, its score weighing "
            f"{reranker.get('weight', 1.0):g} against the hybrid score's "
            f"{1 - reranker.get('weight', 1.0):g}): {reranker['reason']} "
            + (
                "It ships with the search table."
                if reranker["deploy"]
                else "It is not deployed, nor loaded; /search serves hybrid results."
            ),
            "",
        ]
        if reranker.get("weight_reason"):
            lines += [f"Its weight: {reranker['weight_reason']}.", ""]
        variant = reranker.get("variant")
        if variant and reranker["deploy"]:
            lines += [
                f"Its int8 ONNX graph scores {metric_label(variant['metric'])} "
                f"{variant['int8']:.4f} on the {variant['queries']} against "
                f"{variant['fp32']:.4f} in full precision ({variant['int8_change']:+.4f}; "
                f"allowed: -{variant['max_int8_loss']:g}): the service runs "
                f"**{variant['serve']}** over the top {variant['top_n']} hits.",
                "",
            ]
    return lines


def _fusions(modes: dict[str, Any]) -> list[str]:
    """How hybrid search fused each model's lanes, and where that came from."""
    lines = []
    for model, label in (("base", "Base"), ("fine_tuned", "Fine-tuned")):
        options = modes["options"].get(model)
        if options is None:
            continue
        tuning = modes.get("tuning", {}).get(model) or {}
        why = tuning.get("reason", "not tuned")
        source = (
            f"tuned on the validation queries: {why}"
            if tuning.get("tuned")
            else f"the project's `search.options`: {why}"
        )
        if tuning.get("validation"):
            source += (
                " ("
                + "; ".join(
                    f"{v['queries']} {name} queries: hybrid {v['hybrid']:.4f}, dense "
                    f"{v['dense']:.4f}, lexical {v['lexical']:.4f}"
                    for name, v in tuning["validation"].items()
                )
                + ")"
            )
        lines.append(f"- {label} model: {fusion_label(options)}; {source}.")
    return [*lines, ""] if lines else []


def _fusion_shortfalls(per_mode: dict[str, Any], metric: str) -> list[str]:
    """A sentence for each model whose hybrid ranks clearly below its better
    lane: the fusion settings do not suit that model on these queries."""
    lines = []
    for model, label in (("base", "base"), ("fine_tuned", "fine-tuned")):
        hybrid, dense = per_mode.get(f"hybrid_{model}"), per_mode.get(f"dense_{model}")
        if hybrid is None or dense is None or "lexical" not in per_mode:
            continue
        lane, best = max(
            (("lexical", per_mode["lexical"][metric]), ("dense", dense[metric])),
            key=lambda item: item[1],
        )
        gap = hybrid[metric] - best
        if gap < -FUSION_TOLERANCE:
            lines += [
                f"Hybrid search with the {label} model is {gap:+.4f} "
                f"{metric_label(metric)} below its {lane} lane here: the fusion "
                "tuned on the validation queries does not suit these queries.",
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


def _limitations(
    metrics: dict[str, Any], generated_queries: pd.DataFrame, split: dict[str, Any]
) -> list[str]:
    provider = _distinct(generated_queries, "provider")
    items = [
        "The test queries come from the same generator as the training queries, so "
        "the results measure how well the model learned that generator's queries. "
        "Real shoppers write shorter, vaguer and misspelled queries; expect a "
        "smaller gain on them.",
        "Each test query has exactly one relevant product, the one it was written "
        "for; other products that would satisfy the shopper count as misses. "
        "Absolute values are therefore pessimistic; the comparison between the two "
        "models is fair.",
        "One train/test split and one training run: the confidence interval covers "
        "the choice of test queries, not the variation between training runs.",
    ]
    if "offline" in provider:
        items.insert(
            0,
            "The queries were written by the offline template generator, not by an "
            "LLM: they reuse the catalog's own words, which makes the task easier "
            "than real search. Use these figures to check the pipeline, not to "
            "judge the model.",
        )
    if split.get("split_by", "query") == "query":
        items.append(
            "The split is by query: most test products were also seen in training, "
            "with other queries. The figures therefore flatter the fine-tuned model "
            "and say nothing about products added after training; "
            "`split_by: product` measures that case."
        )
    if not metrics.get("real_queries"):
        items.append("No human relevance judgments were available for this run.")
    else:
        items.append(
            "Human judgments cover only the products that were shown to the "
            "raters; an unjudged product counts as irrelevant even when it is not."
        )
    return ["## Limitations", "", *(f"- {item}" for item in items), ""]


def render_report(
    *,
    metrics: dict[str, Any],
    examples: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    training_history: dict[str, Any],
    generated_queries: pd.DataFrame,
    data_quality: dict[str, Any],
    split: dict[str, Any],
    params: dict[str, Any],
) -> str:
    """The whole report: summary, system, methodology, training, results,
    search modes, findings, examples, real queries, limitations."""
    lines = [
        "# Product search: fine-tuned embedding model evaluation",
        "",
        *_summary(metrics, training_history),
        *_system(metrics),
        *_methodology(
            metrics, training_history, generated_queries, data_quality, split
        ),
        *_training(training_history),
        *_results(metrics),
        *_search_modes(metrics),
        *_onnx(metrics),
        *_findings(metrics),
        *_deployment(metrics),
        *_examples(examples, int(params["top_k_examples"])),
        *_real_queries(metrics),
        *_limitations(metrics, generated_queries, split),
    ]
    return "\n".join(lines).rstrip() + "\n"


def _bars(ax: Any, changes: dict[str, Any], title: str) -> None:
    names = list(changes)
    x = np.arange(len(names))
    width = 0.38
    for offset, key, label, colour in (
        (-width / 2, "baseline", "Baseline", BASELINE_COLOUR),
        (width / 2, "fine_tuned", "Fine-tuned", FINE_TUNED_COLOUR),
    ):
        values = [changes[name][key] for name in names]
        bars = ax.bar(x + offset, values, width, label=label, color=colour)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(x, [metric_label(name) for name in names], rotation=30, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)


def _mode_bars(ax: Any, modes: dict[str, Any]) -> None:
    """The headline metric of each search mode, one bar group per query set."""
    metric = modes["metrics"][0]
    sets = [name for name in QUERY_SETS if modes.get(name)]
    names = list(modes[sets[0]])
    x = np.arange(len(names))
    width = 0.8 / len(sets)
    for i, set_name in enumerate(sets):
        values = [modes[set_name][mode][metric] for mode in names]
        bars = ax.bar(
            x + (i - (len(sets) - 1) / 2) * width,
            values,
            width,
            label=QUERY_SETS[set_name],
            color=["#1f6feb", "#d29922"][i],
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(
        x, [SEARCH_MODES.get(mode, mode) for mode in names], rotation=30, ha="right"
    )
    ax.set_ylim(0, 1.08)
    title = f"{metric_label(metric)} by search mode"
    if len(sets) == 1:
        ax.set_title(f"{title}\n({QUERY_SETS[sets[0]].lower()})", fontsize=10)
    else:
        ax.set_title(title, fontsize=10)
        # Below the mode names, clear of the bars' labels.
        ax.legend(
            fontsize=7, frameon=False, ncols=len(sets), loc="upper center",
            bbox_to_anchor=(0.5, -0.45),
        )  # fmt: skip
    ax.spines[["top", "right"]].set_visible(False)


def plot_metrics_chart(metrics: dict[str, Any]) -> Figure:
    """Grouped bars, baseline beside fine-tuned, for every metric; a panel for
    the real-query metrics when there are some, and one for the search modes."""
    real = metrics.get("real_queries")
    modes = metrics.get("search_modes")
    ratios = [2] + ([1] if real else []) + ([1.5] if modes else [])
    panels = len(ratios)
    figure = Figure(figsize=(5 + 3.5 * (panels - 1) + 1, 4.5), layout="constrained")
    # Drawn with Agg: no display or GUI backend needed.
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False, width_ratios=ratios)[0]
    _bars(
        axes[0],
        metrics["metrics"],
        f"Held-out synthetic queries (n = {metrics['test_queries']:,})",
    )
    axes[0].set_ylabel("Score")
    if real:
        _bars(
            axes[1], real["metrics"], f"Real shopper queries (n = {real['queries']:,})"
        )
    if modes:
        _mode_bars(axes[-1], modes)
    figure.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    figure.suptitle("Base vs fine-tuned model" + (" and search modes" if modes else ""))
    return figure
