"""The keys a person pressed during a call, read from a flow-end push: one reader for the
report's `dtmf` column, the `Outbound Call Completed` event and the DTMF opt-out, so the three
never disagree about what was pressed.

Phonon's document names the field `dtmfPressesd` inside each `callDetails[]` attempt and says
nothing about its items. The rule, for every push:
- The push may come wrapped once as `{"body": …}` (a JSON string or an object), as relays and
  the pull API's records do; it is unwrapped when the outer object has no `callDetails` itself.
- Field names are compared without case, `-` or `_` (`callDetails`, `call_details`,
  `DTMF_Pressesd`). In an attempt every field whose name starts with "dtmf" is read, in order.
- A field holds a list or one value. Each item is a string ("9", "1#9"), an integer (not a
  boolean), or an object whose `digit` / `dtmf` / `value` / `key` / `input` / `digits` field
  holds one of those.
- Of each item the keys of a telephone keypad are kept: 0-9, `*`, `#` and A-D (a lower-case
  letter is not a key: text like "<b>" is noise, not a press of B).
- Bounds, because the body is untrusted: at most MAX_PRESSES items per field and MAX_ITEM_CHARS
  characters per item are read. A key pressed within those bounds is never missed, however many
  came before it (an opt-out "9" after 64 other keys still counts).

The push model (webhook.FlowEndPush) does not keep these fields, so they are read from the raw
body here. Written by hand because no library reads Phonon's pushes.
"""

from __future__ import annotations

import json
from typing import Any

MAX_PRESSES = 1000
MAX_ITEM_CHARS = 64
KEYPAD = frozenset("0123456789*#ABCD")
_ITEM_FIELDS = ("digit", "dtmf", "value", "key", "input", "digits")


def _squash(name: Any) -> str:
    return str(name).replace("-", "").replace("_", "").lower()


def _doc(body: Any) -> dict | None:
    """The push as an object: parsed from text, unwrapped once from `{"body": …}`."""
    try:
        doc = json.loads(body) if isinstance(body, (str, bytes, bytearray)) else body
        if isinstance(doc, dict) and "body" in doc and not any(_squash(k) == "calldetails" for k in doc):
            inner = doc["body"]
            doc = json.loads(inner) if isinstance(inner, (str, bytes, bytearray)) else inner
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _item_keys(item: Any) -> str:
    if isinstance(item, dict):
        item = next((v for k, v in item.items() if _squash(k) in _ITEM_FIELDS), "")
    if not isinstance(item, (str, int)) or isinstance(item, bool):
        return ""
    return "".join(ch for ch in str(item)[:MAX_ITEM_CHARS] if ch in KEYPAD)


def _attempt_keys(attempt: Any) -> str:
    if not isinstance(attempt, dict):
        return ""
    keys: list[str] = []
    for name, value in attempt.items():
        if _squash(name).startswith("dtmf"):
            keys.extend(_item_keys(item) for item in (value if isinstance(value, list) else [value])[:MAX_PRESSES])
    return "".join(keys)


def keys_by_attempt(body: Any) -> list[str]:
    """The keys pressed in each attempt of the push, in attempt order ("" for an attempt
    without any); [] when the body is not a push with a `callDetails` list. `body`: the push's
    text (str or bytes) or its parsed object."""
    if body is None:
        return []
    if isinstance(body, (str, bytes, bytearray)):
        text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
        if "dtmf" not in text.lower():  # most pushes: no parse at all
            return []
    doc = _doc(body)
    attempts = next((v for k, v in doc.items() if _squash(k) == "calldetails"), None) if doc else None
    return [_attempt_keys(a) for a in attempts] if isinstance(attempts, list) else []


def keys_pressed(body: Any, attempt: int, limit: int) -> str | None:
    """The keys pressed in one attempt, at most `limit` of them, or None when there were none."""
    attempts = keys_by_attempt(body)
    keys = attempts[attempt][:limit] if 0 <= attempt < len(attempts) else ""
    return keys or None
