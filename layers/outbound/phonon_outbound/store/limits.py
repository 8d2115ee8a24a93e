"""The limits repository: the rate limiter's (LIMIT#<name>) and the circuit breakers'
(BREAKER#<flow>) small shared items, changed only by an optimistic write on their version
number `ver` (limiter.py)."""

from __future__ import annotations

from typing import Any, Protocol

from boto3.dynamodb.conditions import Attr

from .common import LIMIT_PREFIXES, conditional, dec, plain


class LimitsRepository(Protocol):
    def get(self, key: str) -> dict | None:
        """The item at `LIMIT + name` / `BREAKER + flow`, or None."""
        ...

    def put_if_version(self, key: str, attrs: dict, ver: int | None) -> bool:
        """Replace the item with `attrs` only if its `ver` is still `ver` (None: only if there
        is no item); False, writing nothing, otherwise."""
        ...


def check_key(key: str) -> str:
    if not key.startswith(LIMIT_PREFIXES):
        raise ValueError(f"not a limiter or breaker item: {key!r}")
    return key


class DynamoLimits:
    def __init__(self, table: Any):
        self.table = table

    def get(self, key: str) -> dict | None:
        item = self.table.get_item(Key={"pk": check_key(key), "sk": "-"}, ConsistentRead=True).get("Item")
        return plain(item) if item else None

    def put_if_version(self, key: str, attrs: dict, ver: int | None) -> bool:
        item = {"pk": check_key(key), "sk": "-", **{k: (dec(v) if isinstance(v, float) else v) for k, v in attrs.items()}}
        condition = Attr("pk").not_exists() if ver is None else Attr("ver").eq(ver)
        return conditional(self.table.put_item, Item=item, ConditionExpression=condition)
