"""The explicit column mapping and the reader's options from the deployment's settings
(docs/contact-files.md "Mapping" and "Limits")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Any

from .model import ParseOptions

__all__ = ["mapping_from_metadata", "metadata_text", "parse_options", "split_columns"]

PHONE_COLUMNS_KEY = "phone-columns"
ID_COLUMN_KEY = "id-column"
_CAPS = ("max_decompressed_bytes", "max_line_bytes", "max_columns", "max_cell_bytes", "max_compression_ratio")


def split_columns(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"Mobile, Phone - Work"`` -> ``("Mobile", "Phone - Work")``; None when it names none."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(p.strip() for p in parts if p and p.strip())
    return names or None


def metadata_text(value: str | None) -> str | None:
    """A user-metadata value as the uploader wrote it. S3 keeps metadata in HTTP headers
    (US-ASCII) and returns a non-ASCII value RFC 2047-encoded (``=?UTF-8?B?…?=`` or
    ``=?UTF-8?Q?…?=``; AWS S3 user guide, "Working with object metadata"), so a column named
    ``Mobile Nº`` comes back encoded: decoded here with the standard library's RFC 2047
    decoder. A value that is not such an encoding is kept as it is."""
    if value is None or "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeDecodeError, ValueError):
        return value


def mapping_from_metadata(metadata: Mapping[str, str] | None) -> dict:
    """``phone_columns`` / ``id_column`` for ParseOptions from S3 object metadata
    ``phone-columns`` (comma-separated header names) and ``id-column`` (one header name);
    keys in any case, with ``-`` or ``_`` (``Phone_Columns``); values as S3 returns them
    (RFC 2047-encoded when not ASCII: decoded). Absent or blank entries are left out (the
    header rules apply)."""
    meta = {str(k).strip().lower().replace("_", "-"): metadata_text(v) for k, v in (metadata or {}).items()}
    out: dict[str, Any] = {}
    phones = split_columns(meta.get(PHONE_COLUMNS_KEY))
    if phones:
        out["phone_columns"] = phones
    id_column = (meta.get(ID_COLUMN_KEY) or "").strip()
    if id_column:
        out["id_column"] = id_column
    return out


def parse_options(settings: Any, *, phone_columns: str | Iterable[str] | None = None,
                  id_column: str | None = None, **extra: Any) -> ParseOptions:
    """ParseOptions from a Settings object: region, time zone, size limit, correlation key,
    the resource caps (a setting that is absent keeps the reader's default) and a mapping."""
    caps = {name: getattr(settings, name) for name in _CAPS if getattr(settings, name, None)}
    return ParseOptions(default_region=settings.default_region, time_zone=settings.time_zone,
                        max_bytes=settings.max_file_bytes, correlation_key=settings.correlation_key,
                        phone_columns=split_columns(phone_columns), id_column=(id_column or "").strip() or None,
                        **caps, **extra)
