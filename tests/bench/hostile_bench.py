"""Hostile contact files against the reader's resource caps (issue 10 #4).

    python -m tests.bench.hostile_bench [--dir DIR] [--only NAME ...] [--keep]

Generates each file (streaming: the 10 GiB line is written straight into gzip, never
uncompressed on disk), then feeds it to the reader in a child process run under
``/usr/bin/time -v`` (the whole ``open_contacts`` pre-pass and ``rows()`` with the default
Settings caps) and prints, per case, the peak RSS, the wall-clock seconds, what the reader
answered and the command to repeat the measurement. Target: peak RSS <= 200 MB and <= 60 s
for every case.

Cases:
- ``line-10gib.csv.gz``: a header, then one 10 GiB line of ``0`` (~10 MB of gzip).
- ``header-200mb.csv``: a 200 MB header line.
- ``columns-1m.csv``: 1,000,000 unnamed header columns in a ~1 MB file.
- ``cell-200mb.csv``: a 200 MB cell in row 1, a good row 2.
- ``json-value-200mb.json``: a 200 MB string in a JSON call object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1000 * 1000
MiB = 1 << 20
PIECE = b"0" * MiB


def _write_repeated(fh, piece: bytes, total: int) -> None:
    full, rest = divmod(total, len(piece))
    for _ in range(full):
        fh.write(piece)
    fh.write(piece[:rest])


def make_line_10gib(path: Path) -> None:
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(b"client-identifier,phone,note\nC1,9876543210,")
        _write_repeated(fh, PIECE, 10 * 1024 * MiB)
        fh.write(b"\nC2,9876543211,ok\n")


def make_header_200mb(path: Path) -> None:
    with path.open("wb") as fh:
        fh.write(b"client-identifier,phone,")
        _write_repeated(fh, b"h" * MiB, 200 * MB)
        fh.write(b"\nC1,9876543210,x\n")


def make_columns_1m(path: Path) -> None:
    with path.open("wb") as fh:
        fh.write(b"client-identifier,phone" + b"," * 1_000_000 + b"\n")
        fh.write(b"C1,9876543210\n")


def make_cell_200mb(path: Path) -> None:
    with path.open("wb") as fh:
        fh.write(b"client-identifier,phone,note\nC1,9876543210,")
        _write_repeated(fh, b"x" * MiB, 200 * MB)
        fh.write(b"\nC2,9876543211,ok\n")


def make_json_value_200mb(path: Path) -> None:
    with path.open("wb") as fh:
        fh.write(b'[{"client-identifier": "C1", "contact-numbers": "9876543210", "keys": {"note": "')
        _write_repeated(fh, b"x" * MiB, 200 * MB)
        fh.write(b'"}}]\n')


CASES = {
    "line-10gib.csv.gz": make_line_10gib,
    "header-200mb.csv": make_header_200mb,
    "columns-1m.csv": make_columns_1m,
    "cell-200mb.csv": make_cell_200mb,
    "json-value-200mb.json": make_json_value_200mb,
}


def feed(path: str) -> None:
    """Child process: the reader over the file with the default Settings caps; prints what it answered."""
    from phonon_outbound.contacts import FileRejected, RejectedRow, open_contacts, parse_options
    from phonon_outbound.settings import Settings

    counts = {"valid": 0, "rejected": 0}
    reasons: list[str] = []
    try:
        with open(path, "rb") as fh:
            cf = open_contacts(fh, path, parse_options(Settings()))
            for r in cf.rows():
                if isinstance(r, RejectedRow):
                    counts["rejected"] += 1
                    reasons.append(r.reason)
                else:
                    counts["valid"] += 1
        print(json.dumps({"rows": counts, "reasons": reasons[:3], "notes": cf.notes[:3]}))
    except FileRejected as exc:
        print(json.dumps({"file_rejected": exc.reason}))


def _time_v(cmd: list[str]) -> tuple[float, float, str]:
    full = ["/usr/bin/time", "-v", *cmd]
    started = time.monotonic()
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))  # type: ignore[union-attr]
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        return rss_kb / 1024, wall, "child failed: " + " | ".join(tail)
    return rss_kb / 1024, wall, proc.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="where the files are generated (default: a temporary directory)")
    ap.add_argument("--only", nargs="*", choices=sorted(CASES), help="run only these cases")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--feed", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.feed:
        feed(args.feed)
        return 0
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hostile-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in args.only or list(CASES):
        path = root / name
        if not path.exists():
            t0 = time.monotonic()
            CASES[name](path)
            print(f"# generated {name}: {path.stat().st_size:,} bytes on disk in {time.monotonic() - t0:.1f} s",
                  flush=True)
        cmd = [sys.executable, "-m", "tests.bench.hostile_bench", "--feed", str(path)]
        rss_mb, seconds, answer = _time_v(cmd)
        ok = rss_mb <= 200 and seconds <= 60
        failed |= not ok
        print(f"{name}: peak RSS {rss_mb:.0f} MB, {seconds:.1f} s [{'ok' if ok else 'OVER TARGET'}]")
        print(f"  answer: {answer}")
        print(f"  command: /usr/bin/time -v {shlex.join(cmd)}", flush=True)
        if not args.keep:
            path.unlink()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
