"""A one-page HTML report of one job or one local run (`status --html`, `run --html`).

Self-contained: no script, no external stylesheet, font or image; it opens from the file in
any browser. The chart is inline SVG (calls per minute over time, the limit as a dashed
line), the counts a table, the outcome mix a stacked bar. Every value from data (file names,
job ids, reasons, flow ids) is escaped with `html.escape(quote=True)`: a file name is the
uploader's text, `<script>` included (tests/unit/test_status_html.py).
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .job_status import MIX_ORDER, JobPicture, duration, mix_text

CHART_W, CHART_H = 640, 200
PAD_L, PAD_R, PAD_T, PAD_B = 56, 12, 12, 28
MIX_COLOURS = {"answered": "#2e7d32", "no answer": "#f9a825", "failed": "#c62828", "delivered": "#1565c0",
               "other": "#6d4c41", "waiting": "#9e9e9e"}
STYLE = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212121;max-width:760px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse} td,th{padding:2px 12px 2px 0;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#757575}
.bar{display:flex;height:18px;width:100%;max-width:640px;border:1px solid #ccc}
.legend span{margin-right:12px;white-space:nowrap} .sw{display:inline-block;width:10px;height:10px;margin-right:4px}
"""


def e(value: Any) -> str:
    """Text from data, escaped for an element's content or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: float) -> str:
    """A coordinate: at most one decimal, no exponent."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _nice(top: float) -> int:
    """A round axis maximum at or above `top`."""
    if top <= 0:
        return 1
    step = 10 ** (len(str(int(top))) - 1)
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * step >= top:
            return int(m * step)
    return int(10 * step)


def chart_svg(timeline: list[tuple[int, int]], limit: int, bin_s: int = 60) -> str:
    """Calls per minute over time: one bar per `bin_s` step (`data-start`, `data-calls` = the
    calls settled in it; its height the rate, calls × 60 / bin_s) and the limit as a dashed
    line; a note instead without data."""
    if not timeline:
        return '<p class="muted">no calls settled yet</p>'
    per_min = 60 / bin_s
    top = _nice(max(max(n for _, n in timeline) * per_min, limit))
    plot_w, plot_h = CHART_W - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B
    bar_w = plot_w / len(timeline)
    step = "minute" if bin_s == 60 else f"{bin_s} s"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{CHART_H}" '
             f'viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="calls per minute over time">',
             f'<title>calls per minute over time, one bar per {step} (limit {limit:,})</title>',
             f'<line x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{PAD_L + plot_w}" y2="{PAD_T + plot_h}" stroke="#999"/>',
             f'<text x="{PAD_L - 6}" y="{PAD_T + 4}" text-anchor="end" font-size="11">{top:,}</text>',
             f'<text x="{PAD_L - 6}" y="{PAD_T + plot_h}" text-anchor="end" font-size="11">0</text>']
    for i, (start, calls) in enumerate(timeline):
        rate = calls * per_min
        h = plot_h * rate / top
        x, y = PAD_L + i * bar_w, PAD_T + plot_h - h
        label = datetime.fromtimestamp(start, UTC).strftime("%H:%M:%S")
        parts.append(f'<rect class="bar" data-start="{start}" data-calls="{calls}" x="{_num(x + bar_w * 0.1)}" '
                     f'y="{_num(y)}" width="{_num(max(bar_w * 0.8, 0.5))}" height="{_num(h)}" fill="#1976d2">'
                     f'<title>{label} UTC: {calls:,} calls ({rate:,.0f}/min)</title></rect>')
    if limit:
        y = PAD_T + plot_h - plot_h * limit / top
        parts.append(f'<line class="limit" data-limit="{limit}" x1="{PAD_L}" y1="{_num(y)}" x2="{PAD_L + plot_w}" '
                     f'y2="{_num(y)}" stroke="#c62828" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{PAD_L + plot_w}" y="{_num(max(y - 4, 10))}" text-anchor="end" font-size="11" '
                     f'fill="#c62828">limit {limit:,}/min</text>')
    first = datetime.fromtimestamp(timeline[0][0], UTC).strftime("%H:%M:%S")
    last = datetime.fromtimestamp(timeline[-1][0] + bin_s, UTC).strftime("%H:%M:%S")
    parts.append(f'<text x="{PAD_L}" y="{CHART_H - 8}" font-size="11">{first} UTC</text>')
    parts.append(f'<text x="{PAD_L + plot_w}" y="{CHART_H - 8}" text-anchor="end" font-size="11">{last} UTC</text>')
    parts.append("</svg>")
    return "".join(parts)


def mix_bar(mix: dict[str, Any] | None, skipped: str = "") -> str:
    if mix is None or not sum(mix["groups"].values()):
        return f'<p class="muted">{e(mix_text(mix, skipped))}</p>'
    groups = mix["groups"]
    total = sum(groups.values())
    cells = "".join(f'<div class="seg" data-group="{e(k)}" data-n="{groups[k]}" title="{e(k)}: {groups[k]:,}" '
                    f'style="width:{_num(100 * groups[k] / total)}%;background:{MIX_COLOURS[k]}"></div>'
                    for k in MIX_ORDER if groups.get(k))
    legend = "".join(f'<span><i class="sw" style="background:{MIX_COLOURS[k]}"></i>{e(k)} {groups[k]:,}</span>'
                     for k in MIX_ORDER if groups.get(k))
    return f'<div class="bar">{cells}</div><p class="legend">{legend}</p>'


def _rows(pairs: Iterable[tuple[str, Any]], numeric: bool = False) -> str:
    cls = ' class="n"' if numeric else ""
    return "".join(f'<tr><th>{e(k)}</th><td{cls}>{e(v)}</td></tr>' for k, v in pairs)


def job_section(p: JobPicture) -> str:
    c = p.counts
    facts = [("state", p.state + (f": {p.reason}" if p.reason else "")), ("flow", p.flow or "-"),
             ("rows in the file", "?" if p.rows is None else f"{p.rows:,}"), ("rows read", f"{p.rows_read:,}"),
             ("rows queued", f"{p.rows_queued:,}"),
             ("chunks", f"{p.chunks_settled:,} settled of {p.chunks_queued:,} queued"),
             ("calls sent", f"{p.sent:,} in {p.requests:,} requests"),
             ("outcomes arrived", f"{p.outcomes:,} of {c.get('accepted', 0):,} accepted"),
             ("calls/min", (f"{p.calls_per_minute:,} now" if p.eta_s != 0 else "")
              + (", " if p.eta_s != 0 and p.achieved_per_minute is not None else "")
              + (f"{p.achieved_per_minute:,} while sending" if p.achieved_per_minute is not None else "")
              + f" (limit {p.limit:,})"),
             ("ETA", "done" if p.eta_s == 0 else duration(p.eta_s))]
    counts = [(k, f"{v:,}") for k, v in c.items()]
    return (f'<section class="job" data-job="{e(p.job)}"><h2>{e(p.file or p.job)}</h2>'
            f'<p class="muted">job {e(p.job)}</p>'
            f'<table class="facts">{_rows(facts)}</table>'
            f'<h3>Calls per minute</h3>{chart_svg(p.timeline, p.limit, p.bin_s)}'
            f'<h3>Rows by status</h3><table class="counts">{_rows(counts, numeric=True)}</table>'
            f'<h3>Outcome mix</h3>{mix_bar(p.mix, p.mix_skipped)}</section>')


def render(pictures: list[JobPicture], title: str, extra: Iterable[tuple[str, Any]] = ()) -> str:
    """The page: a heading, run-wide facts (`extra`), then one section per job."""
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    head = _rows(extra)
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{STYLE}</style></head><body>"
            f'<h1>{e(title)}</h1><p class="muted">written {made}</p>'
            + (f'<table class="run">{head}</table>' if head else "")
            + "".join(job_section(p) for p in pictures)
            + "</body></html>\n")


def write_report(path: Path, pictures: list[JobPicture], title: str, extra: Iterable[tuple[str, Any]] = ()) -> Path:
    """Write the page to `path` (atomically: a temporary file beside it, then renamed)."""
    text = render(pictures, title, extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".html-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


__all__ = ["chart_svg", "mix_bar", "render", "write_report"]
