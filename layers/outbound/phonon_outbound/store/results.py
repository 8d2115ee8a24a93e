"""The results repository: the results table, one item per call Phonon accepted, keyed by
`phonon-uuid` and bound once to its row (or, unmatched, to its correlation `ref`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from .common import Retention, conditional_failed, dec, plain


class ResultsRepository(Protocol):
    def put_results(self, items: Iterable[dict]) -> int: ...

    def upsert_result(self, uuid: str, attrs: dict) -> bool: ...

    def get_result(self, uuid: str) -> dict | None: ...

    def find_results(self, attr: str, value: str) -> Iterator[dict]:
        """Results items whose attribute `attr` equals `value` (an operator's lookup of one call
        by client-identifier or request-id: a filtered Scan that reads the whole table, so it is
        for `phonon-outbound status`, never for the request path)."""
        ...


def present(attrs: dict) -> dict:
    """The attributes worth writing (None and "" are left out)."""
    return {k: v for k, v in attrs.items() if v is not None and v != ""}


def binding_allows(old: dict | None, attrs: dict) -> bool:
    """`upsert_result`'s rule, over the present item and the attributes to write: with `job`
    and `row`, the item must be unbound with the same (or no) ref, or bound to that same row;
    without them, unbound with the same ref (no ref in `attrs`: the item has none)."""
    old = old or {}
    ref = attrs.get("ref")
    same_ref = "ref" not in old or (bool(ref) and old["ref"] == ref)
    if "job" in attrs and "row" in attrs:
        return ("job" not in old and same_ref) or (old.get("job") == attrs["job"] and old.get("row") == attrs["row"])
    return "job" not in old and same_ref


class DynamoResults:
    def __init__(self, table: Any, retention: Retention):
        self.table = table
        self.retention = retention

    def put_results(self, items: Iterable[dict]) -> int:
        n = 0
        with self.table.batch_writer(overwrite_by_pkeys=["phonon-uuid"]) as batch:
            for item in items:
                batch.put_item(Item=present(item))
                n += 1
        return n

    def upsert_result(self, uuid: str, attrs: dict) -> bool:
        """Add a flow-end push's facts to the uuid's results item, keeping its binding.

        A results item is bound once: to (`job`, `row`) when the push matched a row (or the
        dispatcher recorded the uuid from the API's answer), else to its correlation `ref`
        (absent when the push had none). With `job` and `row` in `attrs` the write succeeds
        only if the item is unbound, bound to that same row, or unmatched with the same (or no)
        ref — and then the `unmatched` mark is removed; without them, only if the item has no
        row and the same ref. Returns False, writing nothing, when the binding differs."""
        attrs = present(attrs)
        attrs["expires_at"] = self.retention.expiry()
        names = {f"#a{i}": k for i, k in enumerate(attrs)} | {"#job": "job", "#ref": "ref"}
        values: dict[str, Any] = {f":v{i}": (dec(v) if isinstance(v, float) else v)
                                  for i, v in enumerate(attrs.values())}
        update = "SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(attrs)))
        same_ref = "(attribute_not_exists(#ref) OR #ref = :ref)" if attrs.get("ref") else "attribute_not_exists(#ref)"
        if attrs.get("ref"):
            values[":ref"] = attrs["ref"]
        if "job" in attrs and "row" in attrs:
            condition = f"(attribute_not_exists(#job) AND {same_ref}) OR (#job = :job AND #row = :row)"
            values |= {":job": attrs["job"], ":row": attrs["row"]}
            names |= {"#row": "row", "#unmatched": "unmatched"}
            update += " REMOVE #unmatched"
        else:
            condition = f"attribute_not_exists(#job) AND {same_ref}"
        try:
            self.table.update_item(
                Key={"phonon-uuid": uuid}, UpdateExpression=update, ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as err:
            if conditional_failed(err):
                return False
            raise
        return True

    def get_result(self, uuid: str) -> dict | None:
        item = self.table.get_item(Key={"phonon-uuid": uuid}).get("Item")
        return plain(item) if item else None

    def find_results(self, attr: str, value: str) -> Iterator[dict]:
        kwargs: dict[str, Any] = {"FilterExpression": Attr(attr).eq(value)}
        while True:
            page = self.table.scan(**kwargs)
            yield from (plain(i) for i in page.get("Items", []) if self.retention.live(i))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
