"""Rate-limit benchmark (issue "Use the whole rate limit, never more").

Drives the local pipeline (`LocalPipeline`, the code behind `phonon-outbound run`) against the
bundled simulator enforcing the limit itself (HTTP 429 over it) with 0.3-1 s of latency per
request, a backlog several minutes deep and several concurrent dispatchers, then reads the
simulator's own acceptance log:

- sustained records/s ÷ limit, over the deep-backlog part of the run (from 30 s after the
  first acceptance until 90 % of the rows were accepted),
- the largest number of records accepted in any 60 s window (must not exceed the limit),
- refusals for rate, and DLQ messages.

Two ways to run it:
- in one process (default): `LocalPipeline` and the simulator share this interpreter;
- `--processes`: the way the issue's checker drives it: the simulator in a process of its own
  (`phonon-outbound simulate --rate R --latency 0.3,1.0`) and the pipeline as the command
  `phonon-outbound run FILE --rate R --concurrency N --api-url … --flow-id … --security-id …`.

    python -m tests.bench.rate_bench --rate 6000 --minutes 3 --concurrency 2
    python -m tests.bench.rate_bench --rate 30000 --minutes 2 --concurrency 2 --processes
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from phonon_outbound.settings import fit_batch_size
from phonon_outbound_dev.local.runner import LocalPipeline, RunOptions
from phonon_outbound_dev.simulator import PhononSimulator

FLOW, SID = "RateBnch", "R" * 64


def max_window(accepted: list[tuple[float, int]], window_s: float = 60.0) -> int:
    events = sorted(accepted)
    best = total = 0
    j = 0
    for t, n in events:
        total += n
        while events[j][0] <= t - window_s:
            total -= events[j][1]
            j += 1
        best = max(best, total)
    return best


def sustained_rate(accepted: list[tuple[float, int]], warmup_s: float = 30.0, upto: float = 0.9) -> float:
    events = sorted(accepted)
    total = sum(n for _, n in events)
    start = events[0][0] + warmup_s
    done, end = 0, events[-1][0]
    for t, n in events:
        done += n
        if done >= upto * total:
            end = t
            break
    inside = sum(n for t, n in events if start <= t <= end)
    return inside / (end - start) if end > start else 0.0


def write_backlog(path: Path, rows: int) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["client-identifier", "phone"])
        for i in range(rows):
            w.writerow([f"B-{i:07d}", f"9{(700000000 + i) % 1000000000:09d}"])


def in_process(path: Path, out: Path, rate: int, batch_size: int | None, concurrency: int,
               latency: tuple[float, float]) -> tuple[dict, dict]:
    with PhononSimulator(flows={FLOW: SID}, rate_per_minute=rate, latency_s=latency, seed=1) as sim:
        opts = RunOptions(flow_id=FLOW, api_url=sim.url, security_id=SID, rate=rate,
                          batch_size=fit_batch_size(rate, batch_size), concurrency=concurrency, out_dir=out,
                          webhook_grace_s=0, stall_timeout_s=120)
        with LocalPipeline(opts, progress=io.StringIO()) as pipeline:
            result = pipeline.run([path])
        return result, sim.stats()


def in_processes(path: Path, out: Path, rate: int, batch_size: int | None, concurrency: int,
                 latency: tuple[float, float]) -> tuple[dict, dict]:
    exe = Path(sys.executable).parent / "phonon-outbound"
    sim = subprocess.Popen([str(exe), "simulate", "--port", "0", "--rate", str(rate),
                            "--latency", f"{latency[0]},{latency[1]}", "--flow", f"{FLOW}={SID}", "--seed", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = (sim.stdout.readline() if sim.stdout else "").strip()
        base = url.split("/", 3)
        cmd = [str(exe), "run", str(path), "--rate", str(rate), "--concurrency", str(concurrency), "--api-url", url,
               "--flow-id", FLOW, "--security-id", SID, "--json", "--out", str(out), "--no-state"]
        if batch_size:
            cmd += ["--batch-size", str(batch_size)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
                              env={**os.environ, "PHONON_SECURITY_ID": ""})
        result = json.loads(done.stdout)
        with urllib.request.urlopen(f"{base[0]}//{base[2]}/_sim/stats", timeout=30) as resp:
            return result, json.load(resp)
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def run(rate: int, batch_size: int | None, minutes: float, concurrency: int, latency: tuple[float, float],
        processes: bool = False) -> dict:
    rows = int(rate * minutes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backlog.csv"
        write_backlog(path, rows)
        started = time.monotonic()
        result, stats = (in_processes if processes else in_process)(path, Path(tmp) / "out", rate, batch_size,
                                                                    concurrency, latency)
        elapsed = time.monotonic() - started
    accepted = [(float(t), int(n)) for t, n in stats["accepted"]]
    per_s = rate / 60.0
    sustained = sustained_rate(accepted)
    return {
        "mode": "processes" if processes else "one process", "limit_per_minute": rate,
        "batch_size": fit_batch_size(rate, batch_size), "concurrency": concurrency, "latency_s": list(latency),
        "rows": rows, "accepted": result["totals"]["accepted"], "elapsed_s": round(elapsed, 1),
        "sustained_per_s": round(sustained, 2), "sustained_ratio": round(sustained / per_s, 4),
        "max_60s_window": max_window(accepted), "rate_refusals": stats.get("rate_refusals", 0),
        "dead_letter_messages": result.get("dead_letter_messages", 0),
        "called_twice": sum(1 for v in stats["calls_by_client_identifier"].values() if v > 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=None, help="default: as `run` (500, at most 1 s of the rate)")
    p.add_argument("--minutes", type=float, default=3.0, help="depth of the backlog, in minutes at the limit")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--latency", type=float, nargs=2, default=(0.3, 1.0))
    p.add_argument("--processes", action="store_true", help="simulator and `phonon-outbound run` as processes")
    args = p.parse_args(argv)
    figures = run(args.rate, args.batch_size, args.minutes, args.concurrency, tuple(args.latency), args.processes)
    print(json.dumps(figures, indent=2))
    ok = (figures["sustained_ratio"] >= 0.97 and figures["max_60s_window"] <= args.rate
          and figures["rate_refusals"] == 0 and figures["dead_letter_messages"] == 0)
    print(f"targets (>= 0.97 sustained, no window over the limit, no refusals, no DLQ): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
