"""The review page (GET /) and its data (POST /review): every way of
searching side by side, graded by the human judgments of a judged query.
The page itself is tested in a real headless Chromium."""

from __future__ import annotations

import math
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient
from kedro.io import DataCatalog, MemoryDataset

from product_search.datasets import OptionalCSVDataset, model_id
from product_search.search.rerank import Reranker
from product_search.service.deps import Served
from product_search.service.encoder import Encoder
from product_search.service.judgments import judgments_by_query
from product_search.service.project import review_base, review_judgments
from product_search.service.settings import ServiceSettings
from tests import pg
from tests.service.conftest import serving

SCREENSHOT = Path(__file__).parent / "artifacts" / "review_page.png"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

# hiking boots: p3 (the boots) is what the shopper wants, p4 (running shoes)
# half-fits, p1 (a skillet) is judged irrelevant; the rest are unjudged.
JUDGMENTS = {"hiking boots": {"p3": 2, "p4": 1, "p1": 0}}
# The best order, p3 then p4: 2/log2(2) + 1/log2(3).
IDEAL_DCG = 2 + 1 / math.log2(3)

ALL_COLUMNS = [
    "dense (base model)",
    "dense (served model)",
    "lexical (BM25)",
    "hybrid",
    "hybrid + rerank",
]


class Reversing:
    """A reranker whose order is known: it reverses the hits it reads."""

    def predict(self, pairs, **kwargs):
        return np.arange(len(pairs), dtype=float)


class Renamed:
    """The real backend under another model id: the 'base model' of a test."""

    def __init__(self, backend, model_id: str) -> None:
        self.backend, self.model_id = backend, model_id
        self.name, self.dimension = backend.name, backend.dimension

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.backend.encode(texts)


@pytest.fixture
def reviewed(encoder, torch_backend, deployed_table) -> Served:
    """The served model, its base model (the same vectors, another name), a
    reranker over the top 3 hybrid hits, and the judgments."""
    return Served(
        encoder,
        deployed_table,
        reranker=Reranker(Reversing(), "rerankers/reversing@v1", 3, ("title",)),
        base_encoder=Encoder(Renamed(torch_backend, "base/all-MiniLM-L6-v2")),
        base_table=deployed_table,
        judgments=JUDGMENTS,
    )


@pytest.fixture
def review_client(reviewed):
    with TestClient(serving(reviewed)) as client:
        yield client


def dcg(grades: list[int]) -> float:
    return sum(grade / math.log2(rank + 1) for rank, grade in enumerate(grades, 1))


def test_the_page_is_self_contained(client):
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>product-search review</title>" in response.text
    # Nothing is loaded from elsewhere: no external script, style or font.
    assert "http://" not in response.text and "https://" not in response.text
    assert "<script src" not in response.text and "<link" not in response.text


def test_review_shows_each_way_of_searching_graded(review_client):
    body = review_client.post("/review", json={"query": " Hiking  BOOTS", "k": 5})
    assert body.status_code == 200, body.text
    review = body.json()

    assert (review["judged"], review["judged_queries"], review["k"]) == (True, 1, 5)
    columns = {column["name"]: column for column in review["columns"]}
    assert list(columns) == ALL_COLUMNS
    assert columns["dense (base model)"]["model"] == "base/all-MiniLM-L6-v2"
    assert columns["hybrid"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert columns["lexical (BM25)"]["model"] is None
    hybrid = columns["hybrid"]["hits"]
    assert (hybrid[0]["title"], hybrid[0]["rank"]) == ("Waterproof Hiking Boots", 1)
    assert [hit["rank"] for hit in hybrid] == [1, 2, 3, 4, 5]
    # Each hit carries its grade: None where the product is unjudged.
    grades = JUDGMENTS["hiking boots"]
    for column in review["columns"]:
        assert [hit["grade"] for hit in column["hits"]] == [
            grades.get(hit["product_id"]) for hit in column["hits"]
        ]
    # BM25 finds only the boots ("hiking", "boots"), not the running shoes:
    # 2 of the ideal 2 + 1/log2(3).
    assert [hit["product_id"] for hit in columns["lexical (BM25)"]["hits"]] == ["p3"]
    assert columns["lexical (BM25)"]["ndcg"] == pytest.approx(2 / IDEAL_DCG)
    # Hybrid ranks the boots, then the running shoes: the ideal order.
    assert [hit["product_id"] for hit in hybrid[:2]] == ["p3", "p4"]
    assert columns["hybrid"]["ndcg"] == pytest.approx(1.0)
    # The reranker reversed hybrid's top 3: an ungraded product first, the
    # running shoes second (1/log2(3)) and the boots third (2/log2(4)).
    reranked = columns["hybrid + rerank"]["hits"]
    assert [hit["product_id"] for hit in reranked[:3]] == [
        hit["product_id"] for hit in reversed(hybrid[:3])
    ]
    assert reranked[2]["rerank_score"] == 0.0 and reranked[3]["rerank_score"] is None
    assert columns["hybrid + rerank"]["ndcg"] == pytest.approx(
        dcg([0, 1, 2]) / IDEAL_DCG
    )


def test_an_unjudged_query_has_no_grades(review_client, client):
    review = review_client.post("/review", json={"query": "wireless earbuds"}).json()

    assert (review["judged"], review["k"]) == (False, 2)  # SEARCH_DEFAULT_K
    assert all(column["ndcg"] is None for column in review["columns"])
    assert {hit["grade"] for c in review["columns"] for hit in c["hits"]} == {None}
    # Without a base model, a reranker or judgments, their columns are left out.
    plain = client.post("/review", json={"query": "hiking boots", "k": 1}).json()
    assert [column["name"] for column in plain["columns"]] == [
        "dense (served model)",
        "lexical (BM25)",
        "hybrid",
    ]
    assert (plain["judged"], plain["judged_queries"]) == (False, 0)


def test_the_review_checks_its_request_as_search_does(review_client):
    blank = review_client.post("/review", json={"query": "  ", "k": 2})
    too_many = review_client.post("/review", json={"query": "boots", "k": 6})

    assert (blank.status_code, too_many.status_code) == (422, 422)
    assert blank.json()["detail"][0]["loc"] == ["body", "query"]
    assert "SEARCH_MAX_K" in too_many.json()["detail"][0]["msg"]


def test_the_page_suggests_the_judged_queries(review_client, client):
    assert review_client.get("/review/queries").json() == ["hiking boots"]
    assert client.get("/review/queries").json() == []


def test_judgments_by_query_keeps_queries_with_a_relevant_product():
    queries = pd.DataFrame(
        {"query_id": ["q1", "q2", "q3"], "query": ["Hiking  Boots ", "pan", "toy"]}
    )
    qrels = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q2", "q9"],
            "product_id": ["p3", "p1", "p2", "p5"],
            "relevance": ["2", "0", "0", "1"],  # as the CSV dataset reads them
        }
    )

    # q2 has no relevant product (its NDCG is undefined), q3 no judgment, and
    # q9 no query text: the evaluation skips them too.
    assert judgments_by_query(queries, qrels) == {"hiking boots": {"p3": 2, "p1": 0}}


def test_the_project_feeds_the_base_model_and_the_judgments(deployed_table, tmp_path):
    from product_search.datasets import PgVectorTableDataset  # noqa: PLC0415

    # The evaluation's table of base-model vectors: here MiniLM's.
    base_table = PgVectorTableDataset(
        table_name=deployed_table.spec.table_name,
        credentials={"con": pg.server_url()},
        dimension=384,
    )
    queries = pd.DataFrame({"query_id": ["q1"], "query": ["Hiking boots"]})
    qrels = pd.DataFrame({"query_id": ["q1"], "product_id": ["p3"], "relevance": ["2"]})
    catalog = DataCatalog(
        {
            "base_search_table": base_table,
            "judged_queries": MemoryDataset(queries),
            "relevance_judgments": MemoryDataset(qrels),
        }
    )
    minilm = "sentence-transformers/all-MiniLM-L6-v2"

    # Beside a fine-tuned model, the base model of the table's vectors.
    model, table = review_base(catalog, "data/06_models/fine_tuned_model@v1")
    assert model_id(model) == minilm
    assert table.qualified_name == deployed_table.qualified_name
    # The base model served itself (nothing trained yet): nothing to compare.
    assert review_base(catalog, minilm) == (None, None)
    assert review_base(DataCatalog({}), minilm) == (None, None)

    assert review_judgments(catalog) == {"hiking boots": {"p3": 2}}
    # The project's optional CSVs, absent: no judgments.
    absent = DataCatalog(
        {
            name: OptionalCSVDataset(
                filepath=str(tmp_path / f"{name}.csv"), columns=list(frame)
            )
            for name, frame in {
                "judged_queries": queries,
                "relevance_judgments": qrels,
            }.items()
        }
    )
    assert review_judgments(absent) is None
    base_table.release()


# --- the page in a real browser --------------------------------------------


@pytest.fixture
def browser():
    """Headless Chromium through chromedriver (``make test`` installs both)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(
            f"No {CHROMIUM} and {CHROMEDRIVER}: `apt-get install -y chromium "
            "chromium-driver` (as `make test` does) to test the review page."
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1700,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(CHROMEDRIVER)
    )
    yield driver
    driver.quit()


@pytest.fixture
def server_url(reviewed):
    """The app served by uvicorn on a free port, in a thread."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = serving(reviewed, ServiceSettings())
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(500):
        if server.started or not thread.is_alive():
            break
        started.wait(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


def test_the_page_shows_the_columns_in_a_browser(browser, server_url):
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions as ec  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    wait = WebDriverWait(browser, 30)
    browser.get(server_url)
    assert browser.title == "product-search review"
    query = browser.find_element(By.NAME, "query")
    # The judged queries are suggested.
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#judged option")))

    query.send_keys("wireless earbuds\n")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "No relevance"))
    assert "earbuds" in browser.find_element(By.ID, "status").text
    assert browser.find_elements(By.CSS_SELECTOR, ".grade, .ndcg") == []

    query.clear()
    query.send_keys("hiking boots\n")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "is judged"))
    columns = browser.find_elements(By.CSS_SELECTOR, "#columns .column")
    assert [c.find_element(By.TAG_NAME, "h2").text for c in columns] == ALL_COLUMNS
    hybrid = browser.find_element(By.CSS_SELECTOR, '.column[data-name="hybrid"]')
    first = hybrid.find_element(By.CSS_SELECTOR, ".hit")
    assert first.find_element(By.CLASS_NAME, "title").text == "Waterproof Hiking Boots"
    assert first.find_element(By.CLASS_NAME, "grade").text == "grade 2"
    assert first.find_element(By.CLASS_NAME, "pid").text == "p3"
    assert "dense 0." in first.find_element(By.CLASS_NAME, "scores").text
    assert [c.find_element(By.CLASS_NAME, "ndcg").text for c in columns] == [
        "NDCG@10 1.000",  # base and served dense: boots, then running shoes
        "NDCG@10 1.000",
        f"NDCG@10 {2 / IDEAL_DCG:.3f}",  # BM25: the boots alone
        "NDCG@10 1.000",
        f"NDCG@10 {dcg([0, 1, 2]) / IDEAL_DCG:.3f}",  # top 3 reversed
    ]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
