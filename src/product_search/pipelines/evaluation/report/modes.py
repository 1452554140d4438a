"""The report's search-mode sections: the lane warning that opens the summary,
and the table of every mode with how hybrid search fused its lanes."""

from __future__ import annotations

from typing import Any

from .formatting import QUERY_SETS, SEARCH_MODES, _p, _table, metric_label


def fusion_label(options: dict[str, Any]) -> str:
    """How a fusion's options combine the two lanes, in words."""
    if options["fusion"] == "rrf":
        how = f"reciprocal rank fusion (k = {options['rrf_k']})"
    else:
        how = "a weighted sum of min-max normalised scores"
    return (
        f"{how}, weights dense {options['dense_weight']:g} and lexical "
        f"{options['lexical_weight']:g}, {options['dense_depth']} dense and "
        f"{options['lexical_depth']} lexical candidates"
    )


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


def _search_modes(metrics: dict[str, Any], max_lane_gap: float) -> list[str]:
    """One table per query set, best value of each metric in bold; a sentence
    under it for each hybrid more than ``max_lane_gap`` below its better lane."""
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
            *_fusion_shortfalls(per_mode, names[0], max_lane_gap),
        ]
    reranker = modes.get("reranker")
    return [*lines, *_reranker(reranker)] if reranker else lines


def _reranker(reranker: dict[str, Any]) -> list[str]:
    """What the reranker reads and weighs, whether it ships, and which of its
    graphs the service runs."""
    lines = [
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


def _fusion_shortfalls(
    per_mode: dict[str, Any], metric: str, max_lane_gap: float
) -> list[str]:
    """A sentence for each model whose hybrid ranks more than ``max_lane_gap``
    below its better lane: the same bound the fusion tuning keeps on the
    validation queries, so a shortfall here means the tuned fusion does not
    carry over to these queries."""
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
        if gap < -max_lane_gap:
            lines += [
                f"Hybrid search with the {label} model is {gap:+.4f} "
                f"{metric_label(metric)} below its {lane} lane here: the fusion "
                "tuned on the validation queries does not suit these queries.",
                "",
            ]
    return lines
