"""prepare_products on tiny hand-made catalogs."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from kedro_datasets.pandas import CSVDataset

from product_search.pipelines.data_generation.products import prepare_products


@pytest.fixture
def raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sku": ["A1", "A2", "A2", "A3", "", "A5"],
            "name": [
                "Caf\u00c3\u00a9 Mug",
                "<b>Chef</b> Knife &amp; Sheath",
                "Dup",
                "   ",
                "No id",
                "Trail   Boots",
            ],  # fmt: skip
            "maker": ["Kitchora", None, "X", "Y", "Z", "TrailPeak"],
            "kind": ["kitchen", "kitchen", "x", "y", "z", "footwear"],
            "cost": ["$12.50", "1,299.00", "1", "2", "3", "n/a"],
            "about": [
                "Stoneware mug,<br>350 ml.",
                float("nan"),
                "",
                "",
                "",
                "Leather.",
            ],
        }
    )


MAPPING = {"product_id": "sku", "title": "name", "brand": "maker",
           "category": "kind", "price": "cost", "description": "about"}  # fmt: skip


def test_prepare_maps_columns_cleans_text_and_counts_every_drop(raw, params):
    params["columns"] = MAPPING
    products, report = prepare_products(raw, params)

    assert products["product_id"].tolist() == ["A1", "A2", "A5"]
    # mojibake repaired, HTML tags and entities stripped, whitespace collapsed
    assert products["title"].tolist() == [
        "Café Mug",
        "Chef Knife & Sheath",
        "Trail Boots",
    ]
    assert products.loc[0, "description"] == "Stoneware mug, 350 ml."
    assert products["price"].tolist()[:2] == [12.5, 1299.0]
    assert pd.isna(products.loc[2, "price"])
    assert products.loc[1, "brand"] == ""  # NaN becomes empty, never "nan"
    assert products.loc[0, "text"] == (
        "Café Mug. Brand: Kitchora. Category: kitchen. Stoneware mug, 350 ml."
    )
    assert report["input_rows"] == 6
    assert report["kept_products"] == 3
    assert report["dropped"] == {"empty_id": 1, "empty_title": 1, "duplicate_id": 1}
    assert report["missing"] == {
        "brand": 1,
        "category": 0,
        "description": 1,
        "price": 1,
    }
    assert report["repaired"]["text_repaired"] == 1
    assert report["repaired"]["html_stripped"] == 2


def test_prepare_names_every_missing_column(raw, params):
    params["columns"] = {**MAPPING, "title": "product_name", "price": "price_usd"}
    with pytest.raises(ValueError, match=r"'product_name' \(for title\), 'price_usd'"):
        prepare_products(raw, params)


def test_optional_column_can_be_left_unmapped(raw, params):
    params["columns"] = {**MAPPING, "brand": None}
    products, report = prepare_products(raw, params)
    assert (products["brand"] == "").all()
    assert report["missing"]["brand"] == 3


def test_zero_rows_is_a_clear_error(params):
    empty = pd.DataFrame(columns=list(MAPPING))
    with pytest.raises(ValueError, match="has no rows"):
        prepare_products(empty, params)


def test_no_usable_product_is_a_clear_error(params):
    raw = pd.DataFrame({"product_id": ["1", "2"], "title": ["", " "], "brand": "",
                        "category": "", "price": "", "description": ""})  # fmt: skip
    with pytest.raises(ValueError, match="both an id and a title"):
        prepare_products(raw, params)


def test_text_respects_the_length_budget(raw, params):
    params["columns"] = MAPPING
    params["text_max_chars"] = 20
    products, report = prepare_products(raw, params)
    assert products["text"].str.len().max() <= 20
    assert products.loc[0, "text"] == "Café Mug. Brand:"  # cut at a word boundary
    assert report["text_truncated"] == 3


def test_non_utf8_catalog_loads_and_is_reported(tmp_path, params, conf_base):
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        b"product_id,title,brand,category,price,description\n"
        b"1,Caf\xe9 Table,Oakly,home,99,Solid oak\n2,Lamp,Lumo,home,20,Brass lamp\n"
    )
    # the same load arguments as `raw_products` in conf/base/catalog.yml
    with open(conf_base / "catalog.yml") as f:
        load_args = yaml.safe_load(f)["raw_products"]["load_args"]
    raw = CSVDataset(filepath=str(path), load_args=load_args).load()
    products, report = prepare_products(raw, params)
    assert products["title"].tolist() == ["Caf Table", "Lamp"]
    assert report["repaired"]["undecodable_text"] == 1
