"""Ingest core benchmark: parse + validate + chunk a generated contact CSV, no network.

    python -m tests.bench.ingest_bench [--rows 1000000] [--small 100000] [--out bench-out]

Prints, and writes to ``<out>/ingest.json``:
- the ingest core's rate in rows/s on one core (``open_contacts`` pre-pass + ``rows()`` +
  correlation key + ``Chunker.add``), for the big file;
- the *floor*: bare ``phonenumbers`` parse + is_valid_number + format(E164) per second, on
  unique numbers from the same file, measured in the same run; and the ratio of the two;
- the peak RSS of the whole process (``ru_maxrss``), for the big and the small file, each
  run in its own subprocess;
- rows per SendMessageBatch: the chunk messages (``{"v":1,"job":…,"flow":…,"chunk":n,
  "rows":[…],"calls":[…]}``) the chunker produces at batch size 500, packed greedily into
  batches of at most 10 messages and 1 MiB.

Targets (the issue): >= 50,000 rows/s, >= 0.75 of the floor, peak RSS <= 150 MB for 1M rows
and within 10 MB of the 100k-row figure, >= 4,000 rows per SendMessageBatch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

TARGET_RATE = 50_000
TARGET_RATIO = 0.75
TARGET_RSS_MB = 150
TARGET_RSS_DELTA_MB = 10
TARGET_ROWS_PER_BATCH = 4_000
BATCH_SIZE = 500
SQS_BATCH_MESSAGES = 10
SQS_BATCH_BYTES = 1024 * 1024
JOB = "0" * 20
FLOW = "BenchFl1"
_GEN_VERSION = 2

NAMES = ["Aarav", "Vivaan", "Aditya", "Diya", "Ananya", "Ishaan", "Saanvi", "Rohan", "Priya", "Kavya",
         "Arjun", "Meera", "Rahul", "Sneha", "Vikram", "Pooja", "José", "Zoë"]
CITIES = ["Mumbai", "Delhi", "Bengaluru", "Hyderabad", "Ahmedabad", "Chennai", "Kolkata", "Pune", "Jaipur"]


def _mobile(rng: random.Random) -> str:
    return rng.choice("6789") + f"{rng.randrange(10**9):09d}"


def _phone_cell(rng: random.Random) -> str:
    k = rng.random()
    m = _mobile(rng)
    if k < 0.70:
        return m
    if k < 0.85:
        return f"+91 {m[:5]} {m[5:]}"
    if k < 0.95:
        return "91" + m
    if k < 0.97:
        return f"{m};+91{_mobile(rng)}"
    if k < 0.995:
        return str(rng.randrange(10**4, 10**6))  # too short: dropped / rejected
    return "9.18E+11"


def generate_csv(path: Path, rows: int, seed: int = 7) -> None:
    """A realistic campaign file: ids (0.5% repeated), 1-2 numbers, 3 variables, 20% start-times."""
    rng = random.Random(seed)
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(["client-identifier", "phone", "tel2", "Name", "LeadID", "City", "start-time"])
        for i in range(1, rows + 1):
            cid = f"CUST{i:08d}" if rng.random() > 0.005 or i < 10 else f"CUST{rng.randrange(1, i):08d}"
            tel2 = _mobile(rng) if rng.random() < 0.10 else ""
            start = f"{day} {rng.randrange(9, 20):02d}:{rng.choice(('00', '15', '30', '45'))}" \
                if rng.random() < 0.20 else ""
            w.writerow([cid, _phone_cell(rng), tel2, rng.choice(NAMES), str(130586000000000000 + i),
                        rng.choice(CITIES), start])
    tmp.replace(path)


def ensure_file(out: Path, rows: int) -> Path:
    path = out / f"contacts-{rows}-v{_GEN_VERSION}.csv"
    if not path.exists():
        t = time.perf_counter()
        generate_csv(path, rows)
        print(f"  generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
    return path


def floor_rate(path: Path, n: int = 40_000) -> tuple[float, int]:
    """Bare phonenumbers parse + is_valid_number + format(E164) on unique single numbers of the file."""
    import phonenumbers
    from phonenumbers import PhoneNumberFormat

    seen: set[str] = set()
    sample: list[str] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for cells in reader:
            cell = cells[1]
            if ";" in cell or "E" in cell or cell in seen:
                continue
            seen.add(cell)
            sample.append(cell)
            if len(sample) >= n:
                break
    t = time.perf_counter()
    for s in sample:
        try:
            num = phonenumbers.parse(s, "IN")
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            phonenumbers.format_number(num, PhoneNumberFormat.E164)
    return len(sample) / (time.perf_counter() - t), len(sample)


class BatchPacker:
    """Greedy SendMessageBatch packing: <= 10 messages and <= 1 MiB per batch."""

    def __init__(self) -> None:
        self.batches = 0
        self._n = 0
        self._bytes = 0
        self.messages = 0
        self.max_message = 0

    def add(self, size: int) -> None:
        self.messages += 1
        self.max_message = max(self.max_message, size)
        if self._n and (self._n == SQS_BATCH_MESSAGES or self._bytes + size > SQS_BATCH_BYTES):
            self._n = self._bytes = 0
        if self._n == 0:
            self.batches += 1
        self._n += 1
        self._bytes += size


def message_size(chunk_no: int, chunk) -> int:
    """Bytes of the chunk message ingest really sends (phonon_outbound.ingest.chunk_message)."""
    from phonon_outbound.ingest import chunk_message

    return len(chunk_message(JOB, FLOW, chunk_no, chunk).encode())


def worker(path: Path) -> dict:
    """Runs in its own process: the ingest core over one file."""
    from phonon_outbound.chunking import CallTooLarge, Chunker
    from phonon_outbound.contacts import ParseOptions, ValidRow, open_contacts

    opts = ParseOptions(default_region="IN", time_zone="Asia/Kolkata")
    correlation = "$flow.key." + opts.correlation_key
    packer = BatchPacker()
    chunker = Chunker(BATCH_SIZE, 64, flow_id=FLOW)
    counts = {"valid": 0, "rejected": 0, "too_large": 0}
    chunk_no = 0
    rows_in_chunks = 0
    pack_s = 0.0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    with path.open("rb") as stream:
        cf = open_contacts(stream, path.name, opts)
        t1 = time.perf_counter()
        for r in cf.rows():
            if isinstance(r, ValidRow):
                counts["valid"] += 1
                r.call["keys"].append({"name": correlation, "value": f"{JOB}.{r.row}"})
                try:
                    done = chunker.add(r.row, r.call)
                except CallTooLarge:
                    counts["too_large"] += 1
                    continue
                if done:
                    p = time.perf_counter()
                    for chunk in done:
                        packer.add(message_size(chunk_no, chunk))
                        chunk_no += 1
                        rows_in_chunks += len(chunk.rows)
                    pack_s += time.perf_counter() - p
            else:
                counts["rejected"] += 1
        for chunk in chunker.flush():
            packer.add(message_size(chunk_no, chunk))
            chunk_no += 1
            rows_in_chunks += len(chunk.rows)
    t2 = time.perf_counter()
    cpu = time.process_time() - cpu0
    rows = counts["valid"] + counts["rejected"]
    core_s = (t2 - t0) - pack_s
    return {
        "file": str(path), "rows": rows, "row_count": cf.row_count, **counts,
        "prepass_s": round(t1 - t0, 3), "rows_pass_s": round(t2 - t1 - pack_s, 3), "core_s": round(core_s, 3),
        "cpu_s": round(cpu, 3), "rows_per_s": round(rows / core_s),
        "chunks": chunk_no, "batches": packer.batches, "rows_in_chunks": rows_in_chunks,
        "rows_per_batch": round(rows_in_chunks / max(packer.batches, 1)),
        "max_message_bytes": packer.max_message,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_worker(path: Path) -> dict:
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root / "layers" / "outbound"), str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "tests.bench.ingest_bench", "--worker", str(path)],
                          cwd=root, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--repeat", type=int, default=2, help="runs of the big file; the fastest is reported")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return {}
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"ingest bench: {args.rows:,} and {args.small:,} rows, python {sys.version.split()[0]}", file=sys.stderr)
    big = ensure_file(args.out, args.rows)
    small = ensure_file(args.out, args.small)
    floor, floor_n = floor_rate(big)
    runs = [run_worker(big) for _ in range(max(1, args.repeat))]
    res_big = dict(max(runs, key=lambda r: r["rows_per_s"]))
    res_big["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    res_big["all_rows_per_s"] = [r["rows_per_s"] for r in runs]
    res_small = run_worker(small)
    ratio = res_big["rows_per_s"] / floor
    delta = res_big["peak_rss_mb"] - res_small["peak_rss_mb"]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make bench  (python -m tests.bench.run_all)",
        "cpu": _cpu_name(), "python": sys.version.split()[0],
        "floor_numbers_per_s": round(floor), "floor_sample": floor_n,
        "big": res_big, "small": res_small,
        "ratio_to_floor": round(ratio, 2), "rss_delta_mb": round(delta, 1),
    }
    checks = [
        ("ingest core rows/s (1 core)", f"{res_big['rows_per_s']:,}", f">= {TARGET_RATE:,}",
         res_big["rows_per_s"] >= TARGET_RATE),
        ("floor: phonenumbers parse+valid+E164 /s", f"{round(floor):,}", "", True),
        ("ratio core / floor", f"{ratio:.2f}", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO),
        (f"peak RSS, {args.rows:,} rows", f"{res_big['peak_rss_mb']} MB", f"<= {TARGET_RSS_MB} MB",
         res_big["peak_rss_mb"] <= TARGET_RSS_MB),
        (f"peak RSS, {args.small:,} rows", f"{res_small['peak_rss_mb']} MB", "", True),
        ("RSS growth big - small", f"{delta:.1f} MB", f"<= {TARGET_RSS_DELTA_MB} MB", delta <= TARGET_RSS_DELTA_MB),
        ("rows per SendMessageBatch", f"{res_big['rows_per_batch']:,}", f">= {TARGET_ROWS_PER_BATCH:,}",
         res_big["rows_per_batch"] >= TARGET_ROWS_PER_BATCH),
        ("  largest chunk message", f"{res_big['max_message_bytes']:,} B", "", True),
    ]
    result["checks"] = [{"what": w, "value": v, "target": t, "ok": ok} for w, v, t, ok in checks]
    print(f"\ningest core ({args.rows:,} rows: pre-pass {res_big['prepass_s']} s + rows {res_big['rows_pass_s']} s; "
          f"{res_big['valid']:,} valid, {res_big['rejected']:,} rejected, {res_big['chunks']:,} chunks; "
          f"fastest of {len(runs)} runs: {', '.join(f'{r:,}' for r in res_big['all_rows_per_s'])} rows/s)")
    for w, v, t, ok in checks:
        print(f"  {w:<42} {v:>12}  {t:<12} {'ok' if ok or not t else 'MISSED'}")
    (args.out / "ingest.json").write_text(json.dumps(result, indent=2))
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
