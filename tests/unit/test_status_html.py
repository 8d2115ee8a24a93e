"""The one-page HTML report (devkit html.py): self-contained, every value from data escaped,
the chart's numbers those of the data. Parsed with html.parser and the SVG with an XML
parser; opened in a real headless browser too when one is installed (chromium-headless-shell,
`apt-get install chromium-headless-shell`), else that test is skipped."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from phonon_outbound_dev import html as report
from phonon_outbound_dev.job_status import JobPicture

HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>&amp;.csv'
SVG_NS = "{http://www.w3.org/2000/svg}"


def _picture(**over) -> JobPicture:
    base = dict(job="job-<1>", file="incoming/" + HOSTILE, flow="DemoFlw1", state="sending", rows=2_000,
                rows_read=1_500, chunks_queued=3, chunks_total=None, chunks_settled=2,
                counts={"accepted": 900, "failed": 100, "duplicate": 0, "cancelled": 0}, sent=1_000, requests=2,
                outcomes=450, calls_per_minute=500, limit=600, eta_s=120, reason="",
                timeline=[(1_800_000_000, 400), (1_800_000_060, 0), (1_800_000_120, 600)],
                mix={"groups": {"answered": 300, "no answer": 100, "failed": 50, "delivered": 0, "other": 0,
                                "waiting": 450}, "values": {}})
    base.update(over)
    return JobPicture(**base)


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> Collect:
    c = Collect()
    c.feed(page)
    c.close()
    return c


def test_hostile_values_are_text_never_markup():
    page = report.render([_picture(reason="<b>x</b>")], title="run of " + HOSTILE)
    parsed = _parse(page)
    tags = {t for t, _ in parsed.tags}
    assert "script" not in tags and "img" not in tags and "b" not in tags
    assert not any(k.startswith("on") for _, attrs in parsed.tags for k in attrs)
    text = "".join(parsed.text)
    assert HOSTILE in text  # shown as the name it is, after unescaping
    assert 'data-job="job-&lt;1&gt;"' in page


def test_self_contained():
    page = report.render([_picture()], title="t")
    parsed = _parse(page)
    for tag, attrs in parsed.tags:
        assert "src" not in attrs and "href" not in attrs, (tag, attrs)
        assert tag not in ("script", "link", "iframe", "object", "embed")
    assert "url(" not in page and "@import" not in page
    assert page.count("http") == page.count("http://www.w3.org/2000/svg")


@pytest.mark.parametrize("bin_s", [60, 10])
def test_chart_is_well_formed_svg_with_the_data(bin_s):
    p = _picture(bin_s=bin_s, timeline=[(1_800_000_000 + i * bin_s, n) for i, n in enumerate((40, 0, 100, 7))])
    page = report.render([p], title="t")
    svg_text = page[page.index("<svg"):page.index("</svg>") + len("</svg>")]
    svg = ET.fromstring(svg_text)  # well-formed XML, or this raises
    bars = [r for r in svg.iter(f"{SVG_NS}rect") if r.get("class") == "bar"]
    assert [(int(b.get("data-start")), int(b.get("data-calls"))) for b in bars] == p.timeline
    # heights on one scale of calls per minute (calls × 60 / step); the limit line at the limit's height
    base = report.PAD_T + (report.CHART_H - report.PAD_T - report.PAD_B)
    top = max(bars, key=lambda b: int(b.get("data-calls")))
    scale = float(top.get("height")) / (int(top.get("data-calls")) * 60 / bin_s)  # pixels per call/min
    for b in bars:  # coordinates are written to 0.1 px
        assert abs(float(b.get("height")) - int(b.get("data-calls")) * 60 / bin_s * scale) < 0.1
        assert abs(float(b.get("y")) + float(b.get("height")) - base) < 0.1
    [limit] = [ln for ln in svg.iter(f"{SVG_NS}line") if ln.get("class") == "limit"]
    assert int(limit.get("data-limit")) == 600
    assert abs((base - float(limit.get("y1"))) - 600 * scale) < 0.5


def test_mix_bar_and_counts_table():
    page = report.render([_picture()], title="t")
    parsed = _parse(page)
    segs = {a["data-group"]: int(a["data-n"]) for t, a in parsed.tags if t == "div" and "data-group" in a}
    assert segs == {"answered": 300, "no answer": 100, "failed": 50, "waiting": 450}
    widths = [float(a["style"].split("width:")[1].split("%")[0]) for t, a in parsed.tags if "data-group" in a]
    assert abs(sum(widths) - 100) < 0.5
    text = "".join(parsed.text)
    assert "900" in text and "accepted" in text


def test_no_data_yet_and_mix_not_read():
    page = report.render([_picture(timeline=[], mix=None, mix_skipped="50,000 rows: give --outcomes")], title="t")
    assert "<svg" not in page and "no calls settled yet" in page and "give --outcomes" in page


def test_write_report(tmp_path):
    out = report.write_report(tmp_path / "sub" / "r.html", [_picture()], title="t")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]  # no temporary file left behind


BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")


# Without these flags Chromium tries Google's hosts at start, which this closed network refuses.
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(BROWSER is None, reason="no headless browser installed (make browser)")
def test_opens_in_a_headless_browser(tmp_path):
    page = report.write_report(tmp_path / "report.html", [_picture(), _picture(job="job-2")], title=HOSTILE)
    proc = subprocess.run([BROWSER, *QUIET, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           Path(page).as_uri()], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _parse(proc.stdout)  # the document as the browser built it
    tags = [t for t, _ in dom.tags]
    assert "script" not in tags and "img" not in tags
    assert tags.count("svg") == 2 and sum(1 for t, a in dom.tags if t == "rect" and a.get("class") == "bar") == 6
    assert HOSTILE in "".join(dom.text)
    shot = tmp_path / "shot.png"
    proc = subprocess.run([BROWSER, *QUIET, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                           "--window-size=800,1200", Path(page).as_uri()], capture_output=True, timeout=60)
    assert proc.returncode == 0 and shot.stat().st_size > 5_000  # it renders (a blank page is ~2 KB)
