"""`phonon-outbound check`: the ingest rules on local files, with the same report, no AWS.

ACCEPTED here means "would be sent". The flow is resolved as ingest resolves it (the JSON
file's own flow-id, else --flow-id); without AWS a flow can only be checked for its shape.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from phonon_outbound.chunking import CallTooLarge, Chunker
from phonon_outbound.contacts import FileRejected, RejectedRow, ValidRow, open_contacts, parse_options
from phonon_outbound.flows import FLOW_ID_RE, not_a_flow_id, resolve_flow
from phonon_outbound.reports import ReportWriter, summary_dict
from phonon_outbound.settings import Settings
from phonon_outbound.status import Status
from phonon_outbound.suppression import _FileCounts
from phonon_outbound.windows import check_row

PLACEHOLDER_JOB = "0" * 20  # same length as a real job id, so sizes match what ingest measures


def check_file(path: Path, settings: Settings, out_dir: Path, *,
               phone_columns: str | tuple[str, ...] | list[str] | None = None, id_column: str | None = None,
               suppression: Any = None) -> dict:
    """Validate one file as ingest would and write its report and summary to ``out_dir``.

    ``phone_columns`` (header names, or one comma-separated string) and ``id_column``: the
    explicit column mapping (docs/contact-files.md "Mapping"), as S3 metadata gives it to ingest.
    ``suppression``: a `SuppressionList` (`check --suppress`): rows it holds back are SUPPRESSED.
    """
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / f"{path.name}.results.csv"
    counts = {"rows": 0, "accepted": 0, "rejected": 0, "duplicate": 0, "failed": 0, "suppressed": 0}
    summary: dict = {"file": str(path), "flow": ""}
    correlation = f"$flow.key.{settings.correlation_key}"
    with report.open("w", encoding="utf-8", newline="") as fh:
        writer = ReportWriter(fh)
        try:
            size = path.stat().st_size
            if size > settings.max_file_bytes:
                raise FileRejected(f"file is {size:,} bytes, larger than the configured limit of "
                                   f"{settings.max_file_bytes:,} bytes")
            with path.open("rb") as stream:
                contacts = open_contacts(stream, path.name, parse_options(
                    settings, phone_columns=phone_columns, id_column=id_column))
                flow, _ = resolve_flow(None, contacts.flow_id, f"incoming/{path.name}", settings.default_flow_id)
                if not flow:
                    raise FileRejected("no flow for this file: give --flow-id or a 'flow-id' in the JSON")
                if not FLOW_ID_RE.match(flow):
                    raise FileRejected(not_a_flow_id(flow))
                summary["flow"] = flow
                chunker = Chunker(batch_size=settings.batch_size, security_id_len=64, flow_id=flow)
                in_file = _FileCounts()
                window_held, window_opens = 0, ""  # rows the calling window would hold now
                for item in contacts.rows():
                    counts["rows"] += 1
                    item, hold = check_row(item, flow, settings)  # the calling window, as ingest and dispatch apply it
                    if hold:
                        window_held += 1
                        window_opens = window_opens or hold
                        item.warnings.append(hold)
                    if isinstance(item, ValidRow):
                        item.call["keys"].append({"name": correlation, "value": f"{PLACEHOLDER_JOB}.{item.row}"})
                        try:
                            chunker.add(item.row, item.call)
                        except CallTooLarge as err:
                            counts["rejected"] += 1
                            writer.write(item.row, item.client_id, Status.REJECTED, "", "", str(err))
                            continue
                        held = suppression.check(flow, [(item.row, item.client_id, list(item.call["contact-numbers"]))],
                                                 file_counts=in_file) if suppression is not None else {}
                        if held:
                            counts["suppressed"] += 1
                            writer.write(item.row, item.client_id, Status.SUPPRESSED, "", "", held[item.row])
                            continue
                        counts["accepted"] += 1
                        writer.write(item.row, item.client_id, Status.ACCEPTED, "", "", "; ".join(item.warnings))
                    elif isinstance(item, RejectedRow):
                        counts["rejected"] += 1
                        writer.write(item.row, item.client_id, Status.REJECTED, "", "", item.reason)
                summary["notes"] = list(contacts.notes)
                if window_held:
                    summary["notes"].append(f"{window_held:,} row(s) would be held now: "
                                            f"{window_opens.removeprefix('held: ')}")
        except FileRejected as err:
            counts = dict.fromkeys(counts, 0)
            summary["error"] = err.reason
            fh.seek(0)
            fh.truncate()
            ReportWriter(fh)
    summary = summary_dict(file=str(path), flow=summary.get("flow"), counts=counts, api_requests=0,
                           timings={"elapsed_s": time.monotonic() - started}, notes=summary.get("notes", []),
                           report=str(report), error=summary.get("error"))
    (out_dir / f"{path.name}.summary.json").write_text(json.dumps(summary, indent=2))
    return summary
