"""The query of a paged list (`after`, `limit`, `order`), read the same way by every list route
(a response's input items, a conversation's items), so they answer a bad value alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from litestar.datastructures import MultiDict

from xrouter.domain.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class PageQuery:
    after: str | None
    """The id of the item the page starts after (exclusive); None: from the start."""
    limit: int
    """As sent: its range is the use case's to check."""
    order: Literal["asc", "desc"]


def page_query(query: MultiDict[str]) -> PageQuery:
    """`order` (`asc` or `desc`, default `desc`), `limit` (an integer, default 20) and `after`;
    InvalidRequest (400) names the parameter that is not one of those."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            "`order` must be 'asc' or 'desc'.", param="order", code="invalid_value"
        )
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise InvalidRequest(
            "`limit` must be an integer.", param="limit", code="invalid_value"
        ) from None
    return PageQuery(
        after=query.get("after"), limit=limit, order="asc" if order == "asc" else "desc"
    )
