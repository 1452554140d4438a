"""What Claude is asked for one product, and how its answer is read: the
prompt, the ``record_queries`` tool it must call, and the answer's validation.

Answers are cached by prompt version, so changing ``PROMPT_TEMPLATE``,
``QUERY_TYPE_GUIDE`` or the tool means bumping ``prompt_version`` in the
parameters.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

TOOL_NAME = "record_queries"

QUERY_TYPE_GUIDE = {
    "specific": (
        "the shopper already knows what they want and names it: the brand, "
        "product line or model (e.g. 'lodge 10 inch cast iron skillet')"
    ),
    "general": (
        "the broad category a shopper types while still browsing, without "
        "brand or model (e.g. 'frying pan', 'running shoes')"
    ),
    "need_based": (
        "the problem, situation or recipient the product is for, not the "
        "product itself (e.g. 'gift for someone who loves cooking', "
        "'shoes for a rainy hike')"
    ),
    "attribute_focused": (
        "a concrete attribute the shopper filters on, such as material, size, "
        "colour, capacity or a feature (e.g. '12 inch nonstick pan oven safe')"
    ),
}

PROMPT_TEMPLATE = """\
You are helping to build the search engine of an online store. Write \
{count} realistic search queries that different shoppers would type into the \
store's search box when this product is exactly what they are looking for.

<product>
Title: {title}
Brand: {brand}
Category: {category}
Price: {price}
Description: {description}
</product>

Spread the {count} queries over these query types, as evenly as the count \
allows:
{query_types}

Write the way shoppers type: short (usually 2 to 8 words), lowercase, no \
quotation marks, no numbering. Use the words a shopper would use rather than \
copying the title. Every query must be different, and only specific queries \
may name the brand or model.

Record exactly {count} queries with the {tool_name} tool."""


class _Query(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    query: str = Field(min_length=1)
    query_type: str


class _Answer(BaseModel):
    queries: list[_Query] = Field(min_length=1)


class MalformedAnswerError(Exception):
    """Claude answered, but not with a usable ``record_queries`` call."""


def record_queries_tool(query_types: list[str], count: int) -> dict[str, Any]:
    """The tool Claude is made to call, its input schema being the answer's."""
    return {
        "name": TOOL_NAME,
        "description": (
            f"Record the {count} shopper search queries written for the product."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "queries": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "query": {
                                "type": "string",
                                "minLength": 1,
                                "description": "What the shopper types.",
                            },
                            "query_type": {"type": "string", "enum": query_types},
                        },
                        "required": ["query", "query_type"],
                    },
                }
            },
            "required": ["queries"],
        },
    }


def build_prompt(
    product: dict[str, Any], queries_per_product: int, query_types: list[str]
) -> str:
    """The user message for one product (a prepared ``products`` row)."""
    price = product["price"]
    return PROMPT_TEMPLATE.format(
        count=queries_per_product,
        title=_shown(product["title"]),
        brand=_shown(product["brand"]),
        category=_shown(product["category"]),
        price="not given" if pd.isna(price) else f"{float(price):.2f}",
        description=_shown(product["description"]),
        query_types="\n".join(f"- {t}: {QUERY_TYPE_GUIDE[t]}" for t in query_types),
        tool_name=TOOL_NAME,
    )


def _shown(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "not given"
    return str(value).strip() or "not given"


def parse_answer(
    message: anthropic.types.Message,
    query_types: list[str],
    queries_per_product: int,
    max_tokens: int,
) -> list[dict[str, str]]:
    """The validated queries of a ``record_queries`` call, at most the count asked."""
    if message.stop_reason == "max_tokens":
        raise MalformedAnswerError(f"the answer was cut off at {max_tokens} tokens")
    call = next(
        (
            block
            for block in message.content
            if block.type == "tool_use" and block.name == TOOL_NAME
        ),
        None,
    )
    if call is None:
        raise MalformedAnswerError(f"no {TOOL_NAME} tool call in the answer")
    try:
        answer = _Answer.model_validate(call.input)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}"
            for problem in error.errors()[:3]
        )
        raise MalformedAnswerError(problems) from None
    unknown = sorted({q.query_type for q in answer.queries} - set(query_types))
    if unknown:
        raise MalformedAnswerError(f"unknown query type(s) {unknown}")
    return [q.model_dump() for q in answer.queries[:queries_per_product]]
