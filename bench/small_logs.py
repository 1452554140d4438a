"""Small search logs: does /search stay at or above its best lane?

The Home Depot protocol of bench/home_depot.py (17,936 titles, 1,000 real
queries with graded judgments, offline queries for the judged products and a
shop-style search log of other queries), run as a shop with a small log would:
the log capped (data_generation.query_sources.log.max_queries) at every
setting of --settings: all of it, 500 queries, 130 queries, and none. For each
setting, with the pipeline's own nodes:

- the embedding model and the reranker trained on that setting's pairs, each
  capped at --max-pairs (the log's first), as the issue's run did;
- the fusion `tune_search_options` chooses and the reranker weight
  `tune_reranker` chooses on the setting's validation queries, and why;
- lexical, dense, hybrid (served fusion) and hybrid + rerank (served weight,
  int8 ONNX when the evaluation's check lets it serve) on the real queries and
  on held-out generated ones, with p-values against the best lane
  (`evaluate_search_modes`, the code behind /search);
- the candidate default fusions (RRF k = 60, equal-weight min-max, and the
  project's former default) applied to the same lanes, which chose the
  project's default;
- with --latency-only SETTINGS, run afterwards on a quiet machine: default
  /search latency (p50/p95 at 1 and 4 clients) through the running service,
  with the setting's reranker deployed (if its evaluation shipped none, the
  reranker as it would ship, to know its cost).

Trained models are kept in --models DIR/<setting> and reused; --reranker-pairs
0 trains no reranker. --demo adds the candidate fusions on the demo (after
`make run`). Each run merges its settings into the results.

Writes bench/results/small_logs.{json,md}.

    .venv/bin/python bench/small_logs.py [--settings full,500,130,none]
        [--max-pairs 8000] [--reranker-pairs 8000] [--models DIR]
        [--generated 1000] [--train-only] [--latency-only full] [--demo]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import uvicorn
from common import (
    ROOT,
    environment,
    fmt_p,
    generate_queries,
    load_params,
    parse_args,
    provenance,
    scratch_database,
    setup,
    write_results,
)
from embed_service import exchange, free_port, get, latency_summary, request_bytes
from home_depot import (
    SEED,
    add_log_thresholds,
    export,
    generation_params,
    limit_to,
    paired,
    trained_model,
    training_products,
)
from rerank import catalog_head, trained_reranker
from sentence_transformers import SentenceTransformer

from product_search import metrics as m
from product_search.datasets import OnnxModelDataset, PgVectorTableDataset, model_id
from product_search.onnx_export import export_onnx
from product_search.pipelines.data_generation.products import prepare_products
from product_search.pipelines.data_generation.search_logs import prepare_search_logs
from product_search.pipelines.data_generation.split import (
    mix_query_sources,
    split_queries,
)
from product_search.pipelines.evaluation import fusion
from product_search.pipelines.evaluation.nodes import reranker_release
from product_search.pipelines.evaluation.report import fusion_label
from product_search.pipelines.evaluation.search_modes import _reranker_verdict
from product_search.pipelines.evaluation.tuning import (
    tune_reranker,
    tune_search_options,
)
from product_search.pipelines.training.pairs import logged_first
from product_search.scoring import build_evaluation_set, search_run
from product_search.scoring.modes import RerankerResult, RerankerVariant
from product_search.search.index import unit_vectors
from product_search.search.indexing import index_products
from product_search.search.onnx import OnnxReranker
from product_search.search.rerank import Reranker
from product_search.search.table import SearchOptions
from product_search.service.deps import Served
from product_search.service.encoder import Encoder, build_backend
from product_search.service.main import create_app
from product_search.service.project import (
    no_reranker_reason,
    project_catalog,
    served_reranker,
)
from product_search.service.server import uvicorn_options
from product_search.service.settings import ServiceSettings

NAME = "small_logs"
# The default fusions the issue compares; the project's default is chosen
# among them by this benchmark's table.
DEFAULTS = {
    "rrf k=60, 1:1": SearchOptions(fusion="rrf", rrf_k=60, dense_weight=1.0,
                                   lexical_weight=1.0),
    "min-max, 0.5:0.5": SearchOptions(fusion="weighted", dense_weight=0.5,
                                      lexical_weight=0.5),
    "rrf k=5, 0.5:1 (former)": SearchOptions(fusion="rrf", rrf_k=5,
                                             dense_weight=0.5, lexical_weight=1.0),
}  # fmt: skip
FEWER_CANDIDATES = (20,)
LATENCY_CONFIGS = {
    "default": {},
    "int8 reranker, top 20": {"rerank_variant": "int8", "rerank_top_n": "20"},
    "no reranker": {"rerank_top_n": "0"},
}
# How many logged queries each setting keeps (None: the whole log).
SETTINGS = {"full": None, "500": 500, "130": 130, "none": 0, "full_all": None}
# Trained on every pair, not --max-pairs: the project's own full-log recipe.
ALL_PAIRS = {"full_all"}
LABELS = {
    "full": "full log",
    "full_all": "full log, every pair",
    "500": "log capped at 500 queries",
    "130": "log capped at 130 queries",
    "none": "no log",
}


def setting_data(
    data: dict[str, pd.DataFrame], products: pd.DataFrame, params: dict, cap: int | None
) -> dict[str, Any]:
    """The setting's training pairs and logged negatives, validation queries
    and held-out generated test queries, as the data_generation pipeline
    makes them with the log capped at ``cap`` queries."""
    params = json.loads(json.dumps(params))
    params["query_sources"]["log"]["max_queries"] = cap
    _, generated, _ = _generated(
        training_products(products, data["qrels"], None), params
    )
    positives, negatives, _ = prepare_search_logs(data["search_logs"], products, params)
    pool, negatives, report = mix_query_sources(
        generated, positives, negatives, data["queries"], params
    )
    train, validation, test = split_queries(pool, params)
    return {
        "train": train,
        "negatives": negatives,
        "validation": validation,
        "test": test,
        "report": report,
    }


_GENERATED: dict[str, Any] = {}


def _generated(products: pd.DataFrame, params: dict):
    """The offline queries of the judged products (the same for every setting)."""
    if "queries" not in _GENERATED:
        _GENERATED["queries"] = generate_queries(products, params)
    return _GENERATED["queries"]


def capped(pairs: pd.DataFrame, cap: int | None) -> pd.DataFrame:
    """The first ``cap`` pairs, the search log's first, then drawn with the seed."""
    if not cap or cap >= len(pairs):
        return pairs
    return logged_first(pairs.sample(frac=1.0, random_state=SEED)).head(cap)


def train_setting(
    setting: str, prepared: dict[str, Any], *, products, base_model, args, device
) -> tuple[Any, dict, Any, dict]:
    """The setting's embedding model and reranker, trained or reused."""
    keep = args.models / setting if args.models else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    training = load_params("training") | {"device": device}
    reranker_params = load_params("reranker") | {"device": device}
    search_params = load_params("search")
    max_pairs, reranker_pairs = (
        (None, None) if setting in ALL_PAIRS else (args.max_pairs, args.reranker_pairs)
    )
    pairs = capped(prepared["train"], max_pairs)
    model, history = trained_model(
        "both", (pairs, prepared["negatives"]), products=products,
        base_model=base_model, training=training, keep=keep,
    )  # fmt: skip
    model.model_card_data.model_id = f"all-MiniLM-L6-v2 fine-tuned ({setting})"
    if args.reranker_pairs == 0:  # no reranker: nothing to tune, ship or run
        return model, history, None, {"trained": False}
    reranker, reranker_history = trained_reranker(
        "both", (capped(prepared["train"], reranker_pairs), prepared["negatives"]),
        products=products, model=model.to(device), params=reranker_params,
        search=search_params, keep=keep, head=catalog_head(),
    )  # fmt: skip
    return model, history, reranker, reranker_history


def held_out_generated(test: pd.DataFrame, n: int) -> tuple[dict, dict]:
    """``n`` of the held-out generated test queries, drawn with the seed."""
    ids = test["query_id"].drop_duplicates()
    ids = set(ids.sample(n=min(n, len(ids)), random_state=SEED))
    rows = test[test["query_id"].isin(ids)].astype({"query_id": str})
    queries = rows.drop_duplicates("query_id").set_index("query_id")["query"]
    qrels = {
        qid: dict.fromkeys(group["product_id"].astype(str), 1)
        for qid, group in rows.groupby("query_id")
    }
    return queries.to_dict(), qrels


def mean(values: dict[str, float]) -> float:
    return float(np.mean(list(values.values())))


def measure_set(
    table, model, queries, qrels, *, options, rerankers: dict[str, Reranker]
) -> dict[str, dict[str, float]]:
    """NDCG@10 per query of each mode as /search runs it (lexical, dense,
    hybrid, hybrid + each reranker), and of each candidate default fusion
    applied to the same lanes."""
    vectors = unit_vectors(model, list(queries.values()), 64)
    runs = {
        mode: search_run(
            table,
            queries,
            None if mode == "lexical" else vectors,
            mode=mode,
            k=10,
            options=options,
        )  # fmt: skip
        for mode in ("lexical", "dense", "hybrid")
    }
    for name, reranker in rerankers.items():
        runs[f"hybrid + rerank ({name})"] = search_run(
            table, queries, vectors, mode="hybrid", k=10, options=options,
            reranker=reranker,
        )  # fmt: skip
    lanes = fusion.lanes(table, queries, vectors, options, 10)
    for name, candidate in DEFAULTS.items():
        runs[f"default: {name}"] = {
            qid: {pid: float(10 - i) for i, pid in
                  enumerate(fusion.fuse(found, candidate, 10))}
            for qid, found in lanes.items()
        }  # fmt: skip
    return {mode: m.graded_metrics(qrels, run, ["ndcg@10"])["ndcg@10"]
            for mode, run in runs.items()}  # fmt: skip


def measure_setting(
    setting: str, prepared: dict, *, products, model, reranker, reranker_history,
    judged, url: str, args, device: str,
) -> tuple[dict, Any]:  # fmt: skip
    """The setting's choices and every mode on both query sets."""
    search_params, eval_params = load_params("search"), load_params("evaluation")
    reranker_params = load_params("reranker") | {"device": device}
    promotion = load_params("deployment", section="promotion")
    dataset = PgVectorTableDataset(
        table_name=f"sl_{setting}", dimension=384, credentials={"con": url}
    )
    index = index_products(
        products, model, load_params("deployment") | {"batch_size": 256},
        {"bm25": search_params["bm25"]},
    )  # fmt: skip
    dataset.save(index)
    table = dataset.load()
    validation = prepared["validation"]
    tuned = tune_search_options(
        table, model, validation, search_params, eval_params, promotion=promotion
    )
    weight = tune_reranker(
        table=table, model=model, reranker=reranker,
        reranker_history=reranker_history, search_options=tuned,
        validation_queries=validation, reranker_params=reranker_params,
        params=eval_params, promotion=promotion,
    )  # fmt: skip
    options = tuned.options
    rerankers = {}
    if weight.weight > 0:
        reranker_id = model_id(reranker)
        base = Reranker(
            model=reranker.to(device), model_id=reranker_id,
            top_n=int(reranker_params["top_n"]),
            columns=tuple(reranker_params["text_columns"]), weight=weight.weight,
        )  # fmt: skip
        export = export_onnx(reranker, reranker_id, int8=True)
        int8 = dataclasses.replace(base, model=OnnxReranker(export, "int8"))
        rerankers = {"fp32": base, "int8": int8}
        # Fewer candidates: what a faster default would cost in relevance.
        rerankers |= {
            f"int8, top {n}": dataclasses.replace(int8, top_n=n)
            for n in FEWER_CANDIDATES if n < base.top_n
        }  # fmt: skip
    sets = {
        "real": (judged.queries, judged.qrels),
        "generated": held_out_generated(prepared["test"], args.generated),
    }
    # The real queries judge the reranker (the gate) and its int8 graph, as
    # the evaluation does; the generated ones are measured with what serves.
    per_query = {
        "real": measure_set(
            table, model, *sets["real"], options=options, rerankers=rerankers
        )
    }
    release: dict[str, Any] = {"reason": weight.reason}
    served_mode, served = "hybrid", {}
    if rerankers:
        real = per_query["real"]
        verdict = _reranker_verdict(
            rerankers["fp32"],
            {"real_queries": {
                "hybrid_fine_tuned": {"ndcg@10": real["hybrid"]},
                "hybrid_rerank_fine_tuned": {
                    "ndcg@10": real["hybrid + rerank (fp32)"]},
            }},
            eval_params, reranker_params, promotion,
        )  # fmt: skip
        fp32 = mean(real["hybrid + rerank (fp32)"])
        int8 = mean(real["hybrid + rerank (int8)"])
        tolerance = float(reranker_params["serving"]["max_int8_loss"])
        serve = "int8" if int8 >= fp32 - tolerance else "fp32"
        fewer = int(reranker_params["serving"]["fp32_top_n"])
        result = RerankerResult(
            **rerankers["fp32"].describe(), deploy=verdict.promote,
            reason=verdict.reason, verdict=verdict,
            variant=RerankerVariant(
                metric="ndcg@10", queries="real queries", fp32=fp32, int8=int8,
                int8_change=int8 - fp32, max_int8_loss=tolerance, serve=serve,
                top_n=rerankers["fp32"].top_n if serve == "int8" else fewer,
            ),
        )  # fmt: skip
        release = reranker_release(result).record()
        if result.deploy:
            name = "int8" if serve == "int8" else f"fp32, top {fewer}"
            served = {
                name: rerankers["int8"] if serve == "int8"
                else dataclasses.replace(rerankers["fp32"], top_n=fewer)
            }  # fmt: skip
            served_mode = f"hybrid + rerank ({name})"
            if name not in rerankers:
                real |= {served_mode: measure_set(
                    table, model, *sets["real"], options=options, rerankers=served,
                )[served_mode]}  # fmt: skip
    per_query["generated"] = measure_set(
        table, model, *sets["generated"], options=options,
        rerankers=served | {k: v for k, v in rerankers.items() if "top" in k},
    )  # fmt: skip
    results: dict[str, Any] = {
        "validation_queries": validation.groupby("source")["query_id"]
        .nunique()
        .to_dict(),
        "training_pairs": len(prepared["train"]),
        "fusion": tuned.model_dump(mode="json", include={
            "options", "tuned", "reason", "validation", "cross_validation"}),
        "reranker_weight": weight.model_dump(mode="json", include={
            "weight", "tuned", "reason", "cross_validation"}),
        "release": release,
        "served_mode": served_mode,
        "sets": {},
    }  # fmt: skip
    for name, values in per_query.items():
        means = {mode: mean(v) for mode, v in values.items()}
        best_lane = max(("lexical", "dense"), key=lambda lane: means[lane])
        results["sets"][name] = {
            "queries": len(values["lexical"]),
            "ndcg@10": means,
            "best_lane": best_lane,
            "against_best_lane": {
                mode: paired(values[best_lane], v)
                for mode, v in values.items() if mode not in ("lexical", "dense")
            },
        }  # fmt: skip
    # The table as the deployment records it: the tuned fusion and the release.
    index = dataclasses.replace(
        index, search_options=tuned.options.model_dump(), reranker=release
    )
    dataset.save(index)
    return results, dataset, index


def serve(spec_path: str) -> None:
    """The service (``create_app``, uvicorn as ``python -m
    product_search.service`` runs it) over a benchmark's table and ONNX
    export, with the project's own loading of its reranker and fusion."""
    spec = json.loads(Path(spec_path).read_text())
    settings = ServiceSettings()

    @contextlib.contextmanager
    def load(settings):
        table = PgVectorTableDataset(
            table_name=spec["table"], dimension=384, credentials={"con": spec["url"]}
        ).load()
        info = table.info()
        model = SentenceTransformer(spec["model_dir"], device="cpu")
        model.model_card_data.model_id = spec["model_id"]
        export = OnnxModelDataset(path=spec["onnx"]).load()
        reranker = settings.reranker(served_reranker(info, export, settings))
        yield Served(
            encoder=Encoder(build_backend(settings, model, export),
                            max_batch_texts=settings.max_batch_texts),
            table=table,
            search_options=settings.search_options(info["search_options"]),
            reranker=reranker,
            reranker_reason=None if reranker else no_reranker_reason(info, settings),
        )  # fmt: skip
        table.engine.dispose()

    uvicorn.run(create_app(settings, load=load), **uvicorn_options(settings))


async def search_load(port: int, queries: list[str], clients: int, seconds: float):
    """``clients`` keep-alive clients posting default /search requests."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bodies = [request_bytes("/search", json.dumps({"query": q}).encode())
              for q in queries]  # fmt: skip
    warm_up_until = time.perf_counter() + 2.0
    deadline = warm_up_until + seconds

    async def client(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while (now := time.perf_counter()) < deadline:
            status, _ = await exchange(reader, writer, bodies[i % len(bodies)])
            i += 1
            if now >= warm_up_until:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - now)
        writer.close()

    await asyncio.gather(*(client(n * 101) for n in range(clients)))
    return {"clients": clients, **latency_summary(latencies, seconds),
            "statuses": statuses}  # fmt: skip


def measure_latency(
    dataset, index, *, weight: float, model, reranker, url: str, queries: list[str], folder: Path,
    seconds: float,
) -> dict:  # fmt: skip
    """Default /search latency at 1 and 4 clients, through the service in its
    own process, for each of LATENCY_CONFIGS."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(str(folder / "model"))
    export = export_onnx(model, model_id(model), int8=True)
    info = dataset.table.info()
    if not (info.get("reranker") or {}).get("model"):
        # Nothing shipped: measure the reranker as it would ship (its tuned
        # weight, or 0.5), so that the cost of the default is still known.
        params = load_params("reranker")
        dataset.save(dataclasses.replace(index, reranker={
            "model": model_id(reranker), "top_n": int(params["top_n"]),
            "text_columns": list(params["text_columns"]),
            "weight": weight or 0.5, "variant": "int8",
        }))  # fmt: skip
    export = dataclasses.replace(
        export, reranker=export_onnx(reranker, model_id(reranker), int8=True)
    )
    OnnxModelDataset(path=str(folder / "onnx")).save(export)
    spec = folder / "serve.json"
    spec.write_text(json.dumps({
        "url": url, "table": dataset.table.table_name, "model_dir": str(folder / "model"),
        "model_id": model_id(model), "onnx": str(folder / "onnx"),
    }))  # fmt: skip
    results = {}
    for name, config in LATENCY_CONFIGS.items():
        port = free_port()
        env = os.environ | {"SEARCH_PORT": str(port), "TOKENIZERS_PARALLELISM": "false"}
        env |= {f"SEARCH_{k.upper()}": v for k, v in config.items()}
        log = (folder / f"server-{port}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(spec)], env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            health = None
            for _ in range(240):
                time.sleep(0.5)
                try:
                    _, health = asyncio.run(get(port, "/health"))
                    break
                except OSError:
                    if process.poll() is not None:
                        raise SystemExit(f"The service exited; see {log.name}.")
            results[name] = {
                "reranker": health.get("reranker"),
                "reranker_reason": health.get("reranker_reason"),
                "loads": [asyncio.run(search_load(port, queries, c, seconds))
                          for c in (1, 4)],
            }  # fmt: skip
            print(name, results[name])
        finally:
            process.terminate()
            process.wait(timeout=60)
    return results


def demo(env: str | None) -> dict:
    """The candidate default fusions on the demo: the lanes of the demo's
    fine-tuned search table (after `make run`) on its held-out generated test
    queries and its validation queries, beside the fusion it serves."""
    os.chdir(ROOT)  # the catalog's paths are relative to the project
    catalog = project_catalog(ROOT, env)
    table = catalog.load("fine_tuned_search_table")
    model = catalog.load("fine_tuned_model")
    tuned = catalog.load("fine_tuned_search_options")
    options = tuned.options
    frames = {"held-out generated": catalog.load("test_queries")}
    validation = catalog.load("validation_queries")
    frames |= {
        f"validation, {source}": rows for source, rows in validation.groupby("source")
    }
    sets = {}
    for name, raw in frames.items():
        frame = raw.astype({"query_id": str, "product_id": str})
        queries = frame.drop_duplicates("query_id").set_index("query_id")["query"]
        qrels = {
            qid: dict.fromkeys(group["product_id"], 1)
            for qid, group in frame.groupby("query_id")
        }
        vectors = unit_vectors(model, queries.tolist(), 64)
        lanes = fusion.lanes(table, queries.to_dict(), vectors, options, 10)
        runs = {
            "lexical": {q: [h.product_id for h in v.lexical[:10]] for q, v in lanes.items()},
            "dense": {q: [h.product_id for h in v.dense[:10]] for q, v in lanes.items()},
            "hybrid": {q: fusion.fuse(v, options, 10) for q, v in lanes.items()},
        } | {
            f"default: {name}": {q: fusion.fuse(v, o, 10) for q, v in lanes.items()}
            for name, o in DEFAULTS.items()
        }  # fmt: skip
        means = {
            mode: mean(m.graded_metrics(
                qrels, {q: m.ranked_run(ids) for q, ids in run.items()}, ["ndcg@10"]
            )["ndcg@10"])
            for mode, run in runs.items()
        }  # fmt: skip
        best = max(("lexical", "dense"), key=lambda lane: means[lane])
        sets[name] = {"queries": len(queries), "ndcg@10": means, "best_lane": best}
    return {"fusion": tuned.model_dump(mode="json", include={"options", "tuned", "reason"}),
            "sets": sets}  # fmt: skip


def main() -> None:  # noqa: PLR0915
    parser = parse_args(__doc__, "keep N real queries (CPU smoke run)")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--max-pairs", type=int, default=8000)
    parser.add_argument(
        "--reranker-pairs", type=int, default=8000,
        help="the reranker's training pairs (0: no reranker)",
    )  # fmt: skip
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--generated", type=int, default=1000)
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument(
        "--latency-only", default=None, metavar="SETTINGS",
        help="measure /search latency on these settings, measured before into "
        "the same results, with nothing else running",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--demo", action="store_true",
        help="add the demo's candidate fusions (after `make run`) to the results",
    )  # fmt: skip
    parser.add_argument("--env", default=None, help="the demo's Kedro environment")
    add_log_thresholds(parser, positive_min=3)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    results = args.out / f"{NAME}.json"
    if args.demo:
        payload = json.loads(results.read_text())
        payload["demo"] = demo(args.env)
        write_results(args.out, NAME, payload, markdown(payload))
        return
    started = time.perf_counter()
    device, base_model = setup(args.device)
    # Importing the service set Kedro's logging up; the nodes say what they chose.
    logging.getLogger("product_search").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="small-logs-") as tmp:
        data = export(Path(tmp))
    if args.limit:
        data = limit_to(args.limit, data)
    params = generation_params(args)
    products, _ = prepare_products(data["products"], params)
    judged = None  # the real queries' judgments, built with the first setting
    previous = json.loads(results.read_text()) if results.exists() else {}
    settings: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="small-logs-pg-") as tmp:
        url = scratch_database(Path(tmp))
        chosen = args.latency_only or args.settings
        for setting in chosen.split(","):
            step = time.perf_counter()
            prepared = setting_data(data, products, params, SETTINGS[setting])
            model, history, reranker, reranker_history = train_setting(
                setting, prepared, products=products, base_model=base_model,
                args=args, device=device,
            )  # fmt: skip
            if args.train_only:
                continue
            if judged is None:
                judged = build_evaluation_set(
                    products, prepared["test"].drop(columns="source"),
                    data["queries"], data["qrels"],
                ).judged  # fmt: skip
            if args.latency_only:
                # The table as the quality run deployed it, then the service.
                result = previous["settings"][setting]
                if result["release"].get("model") and reranker is not None:
                    # Reused, the reranker is the folder it was kept in; a
                    # quality run that trained it recorded its card's id.
                    result["release"] |= {"model": model_id(reranker)}
                dataset = PgVectorTableDataset(
                    table_name=f"sl_{setting}", dimension=384, credentials={"con": url}
                )
                index = dataclasses.replace(
                    index_products(
                        products, model, load_params("deployment")
                        | {"batch_size": 256}, {"bm25": load_params("search")["bm25"]},
                    ),
                    search_options=result["fusion"]["options"],
                    reranker=result["release"],
                )  # fmt: skip
                dataset.save(index)
                result["latency"] = measure_latency(
                    dataset, index, weight=result["reranker_weight"]["weight"],
                    model=model.to("cpu"), reranker=reranker, url=url,
                    queries=list(judged.queries.values()),
                    folder=(args.models or Path(tmp)) / setting / "serving",
                    seconds=args.seconds,
                )  # fmt: skip
            else:
                result, _, _ = measure_setting(
                    setting, prepared, products=products, model=model.to(device),
                    reranker=reranker, reranker_history=reranker_history,
                    judged=judged, url=url, args=args, device=device,
                )  # fmt: skip
                result["wall_time_s"] = time.perf_counter() - step
                result["pairs"] = (
                    {"embedding": None, "reranker": None}  # every pair
                    if setting in ALL_PAIRS
                    else {"embedding": args.max_pairs, "reranker": args.reranker_pairs}
                )
            settings[setting] = result
            print(setting, json.dumps(result["sets"], default=str)[:2000])
    if args.train_only:
        return
    payload = {
        "benchmark": NAME,
        "limit": args.limit,
        "environment": environment(device),
        "max_pairs": args.max_pairs,
        "reranker_pairs": args.reranker_pairs,
        "log_positive_min": params["search_logs"]["positive_min"],
        "eval_queries": {"generated": args.generated},
        "seconds": args.seconds,
        "corpus_products": len(products),
        "real_queries": len(judged.queries) if judged else 0,
        # Settings measured by earlier (or concurrent) runs into the same
        # results stay: read again now.
        "settings": {
            **(json.loads(results.read_text()) if results.exists() else previous).get(
                "settings", {}
            ),
            **settings,
        },
        "total_s": time.perf_counter() - started + previous.get("total_s", 0),
        # The demo's rows, measured by --demo, stay.
        **({"demo": previous["demo"]} if "demo" in previous else {}),
    }
    write_results(args.out, NAME, payload, markdown(payload))


def _served_rerank(result: dict) -> str | None:
    """The hybrid + rerank mode the setting's /search serves, if any."""
    mode = result["served_mode"]
    return mode if mode.startswith("hybrid + rerank") else None


def markdown(payload: dict) -> str:  # noqa: PLR0912, PLR0914
    settings = payload["settings"]
    lines = [
        "# Small search logs: /search against its best lane on Home Depot",
        "",
        f"{payload['corpus_products']:,} products (titles), "
        f"{payload['real_queries']:,} real queries with graded judgments "
        f"(NDCG@10, linear gains) and {payload['eval_queries']['generated']:,} "
        "held-out generated queries (binary). Each setting caps the shop's log "
        "(data_generation.query_sources.log.max_queries; relevance >= "
        f"{payload['log_positive_min']:g} makes a pair), then trains the "
        f"embedding model on {payload['max_pairs']:,} pairs and the reranker on "
        f"{payload['reranker_pairs']:,} (the log's first; the \"full log, every "
        'pair" setting trains both on every pair, as the project does), and lets the '
        "evaluation's nodes choose the fusion and the reranker weight on the "
        "validation queries. Served: what /search serves with those choices "
        "(hybrid, or hybrid + rerank when the reranker ships). p: Wilcoxon, "
        f"against the set's best lane. {provenance(payload)}",
        "",
        "| Setting | Queries | Lexical | Dense | Hybrid | Hybrid + rerank | "
        "Served | Served − best lane | p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, result in settings.items():
        rerank = _served_rerank(result) or "hybrid + rerank (fp32)"
        for name, title in (("real", "real"), ("generated", "held-out generated")):
            found = result["sets"][name]
            v = found["ndcg@10"]
            served = result["served_mode"]
            against = found["against_best_lane"][served]
            lines.append(
                f"| {LABELS[setting]} | {title} | {v['lexical']:.4f} | "
                f"{v['dense']:.4f} | {v['hybrid']:.4f} | "
                + (f"{v[rerank]:.4f}" if rerank in v else "not run")
                + f" | **{v[served]:.4f}** | {against['delta']:+.4f} | "
                f"{fmt_p(against['wilcoxon_p_value'])} |"
            )
    lines += [
        f"\n{LABELS[setting]}: {result['rule_note']}"
        for setting, result in settings.items()
        if result.get("rule_note")
    ]
    lines += [
        "",
        "What the evaluation chose on each setting's validation queries, and why:",
        "",
        "| Setting | Validation queries | Fusion | Why | Reranker weight | Why | "
        "Reranker served |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting, result in settings.items():
        release = result["release"]
        served = (
            f"{release['variant']}, top {release['top_n']}"
            if release.get("model") else "none"
        )  # fmt: skip
        counts = ", ".join(f"{n} {s}" for s, n in result["validation_queries"].items())
        lines.append(
            f"| {LABELS[setting]} | {counts} | "
            f"{fusion_label(result['fusion']['options'])} | "
            f"{result['fusion']['reason']} | {result['reranker_weight']['weight']:g} | "
            f"{result['reranker_weight']['reason']} | {served} |"
        )
    lines += [
        "",
        "The candidate default fusions on the same lanes (NDCG@10; in brackets: "
        "minus the set's best lane). The project's default is the one that "
        "falls least below the best lane over every row:",
        "",
        "| Setting | Queries | Best lane | " + " | ".join(DEFAULTS) + " |",
        "|---|---|---|" + "---|" * len(DEFAULTS),
    ]
    worst = dict.fromkeys(DEFAULTS, 0.0)
    rows = [
        (LABELS[setting], title, result["sets"][name])
        for setting, result in settings.items()
        for name, title in (("real", "real"), ("generated", "held-out generated"))
    ] + [
        ("demo", f"{name} ({found['queries']})", found)
        for name, found in (payload.get("demo") or {}).get("sets", {}).items()
    ]
    for label, title, found in rows:
        v, lane = found["ndcg@10"], found["best_lane"]
        cells = []
        for default in DEFAULTS:
            gap = v[f"default: {default}"] - v[lane]
            worst[default] = min(worst[default], gap)
            cells.append(f"{v[f'default: {default}']:.4f} ({gap:+.4f})")
        lines.append(
            f"| {label} | {title} | {lane} {v[lane]:.4f} | " + " | ".join(cells) + " |"
        )
    lines += [
        f"| worst gap | | | {' | '.join(f'{worst[d]:+.4f}' for d in DEFAULTS)} |",
        "",
    ]
    lines += [
        "Hybrid + rerank by the reranker's graph and candidates (NDCG@10, the "
        "tuned weight; when the tuned weight is 0 nothing runs):",
        "",
        "| Setting | Queries | Hybrid | fp32, top 50 | int8, top 50 | "
        + " | ".join(f"int8, top {n}" for n in sorted(FEWER_CANDIDATES, reverse=True))
        + " |",
        "|---|---|---|---|---|" + "---|" * len(FEWER_CANDIDATES),
    ]
    for setting, result in settings.items():
        for name, title in (("real", "real"), ("generated", "held-out generated")):
            v = result["sets"][name]["ndcg@10"]
            modes = [
                "hybrid + rerank (fp32)",
                "hybrid + rerank (int8)",
                *(f"hybrid + rerank (int8, top {n})"
                  for n in sorted(FEWER_CANDIDATES, reverse=True)),
            ]  # fmt: skip
            cells = [f"{v[mode]:.4f}" if mode in v else "–" for mode in modes]
            lines.append(
                f"| {LABELS[setting]} | {title} | {v['hybrid']:.4f} | "
                + " | ".join(cells)
                + " |"
            )
    lines.append("")
    for setting, result in settings.items():
        if "latency" not in result:
            continue
        lines += [
            f"/search latency, {LABELS[setting]} (the service in its own process, "
            f"1 worker, real queries, k = 10, {payload['seconds']:g} s per load):",
            "",
            "| Configuration | Reranker | Clients | req/s | p50 ms | p95 ms |",
            "|---|---|---|---|---|---|",
        ]
        for name, found in result["latency"].items():
            reranker = found["reranker"]
            served = (
                f"{reranker['backend']}, top {reranker['top_n']}, weight "
                f"{reranker['weight']:g}" if reranker else "none"
            )  # fmt: skip
            for load in found["loads"]:
                lines.append(
                    f"| {name} | {served} | {load['clients']} | {load['per_s']} | "
                    f"{load['p50_ms']} | {load['p95_ms']} |"
                )
        lines.append("")
    lines += [
        "| Setting | Wall time (s) |",
        "|---|---|",
        *(f"| {LABELS[s]} | {r['wall_time_s']:.0f} |" for s, r in settings.items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
