"""Fair-share benchmark (issue 12, item 5: "a 200-row file dropped while a 100,000-row campaign
is being sent starts calling within seconds").

Drives the local pipeline (`LocalPipeline`, the code behind `phonon-outbound run`) against the
bundled simulator at the real limit (30,000 records/min, enforced by the simulator too: HTTP 429
over it) with 0.3-1 s of latency per request:

1. a 100,000-row file is ingested (the whole file queued at once, as ingest does on AWS: the
   local runner's back-pressure on the emulated queue is switched off here) and sent;
2. once it has been sending for `--before` seconds (the minute measured "before"), a 200-row
   file is dropped into the bucket and ingested alongside (on AWS: its own ingest invocation);
3. the run is stopped `--after` seconds after the small file's last call (a Ctrl-C-like stop:
   the rest of the big job is not waited for).

From the simulator's own log of accepted calls (each call's correlation key `<job>.<row>` names
its job, `accepted-at` is when the API took it, latency included):

- drop → first call of the small file (target: under 10 s), and drop → its last call;
- the big job's records/min in the minute before the drop, in the minute after it, and both
  jobs together in the minute after it (the limit is shared: the big job gives up what the
  small one used, and no more); the largest 60 s window of all calls (never over the limit).

Run twice by `make bench`: with the express lane (the default, `express_max_rows` 2000) and
without it (`express_max_rows` 0: one queue, the small file waits behind the backlog).

    python -m tests.bench.fair_bench                   # both runs
    python -m tests.bench.fair_bench --lane express --big 30000 --before 30 --after 20
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from phonon_outbound import wiring
from phonon_outbound.ingest import ObjectRef
from phonon_outbound.settings import fit_batch_size
from phonon_outbound_dev.local.runner import FakeContext, LocalPipeline, RunOptions
from phonon_outbound_dev.simulator import PhononSimulator
from tests.bench.rate_bench import max_window

FLOW, SID = "FairBnch", "F" * 64


def write_file(path: Path, rows: int, prefix: str, first_number: int) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["client-identifier", "phone"])
        for i in range(rows):
            w.writerow([f"{prefix}-{i:07d}", f"9{(first_number + i) % 1000000000:09d}"])


def job_of(call: dict) -> str:
    for key in call.get("keys") or []:
        value = str(key.get("value", ""))
        if str(key.get("name", "")).endswith(".OutboundRef") and "." in value:
            return value.split(".", 1)[0]
    return ""


def s3_event(obj: ObjectRef) -> dict:
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                         "eventName": "ObjectCreated:Put", "eventTime": obj.event_time or "",
                         "s3": {"bucket": {"name": obj.bucket}, "object": {
                             "key": obj.key, "size": obj.size, "eTag": obj.etag, "versionId": obj.version_id}}}]}


def start(p: LocalPipeline, files: list) -> None:
    """What `LocalPipeline.run` starts: the ingest of the files and the dispatch workers."""
    threads = [threading.Thread(target=p._ingest_all, args=(files,), name="ingest", daemon=True)]
    threads += [threading.Thread(target=p._dispatch_worker, args=(n,), name=f"dispatch-{n}", daemon=True)
                for n in range(max(1, p.o.concurrency))]
    if getattr(p, "express_url", ""):
        threads.append(threading.Thread(target=p._dispatch_worker, args=(99, True), name="dispatch-express",
                                        daemon=True))
    for t in threads:
        t.start()
    p._threads.extend(threads)


def per_minute(times: list[float], lo: float, hi: float) -> float:
    return sum(1 for t in times if lo <= t < hi) * 60.0 / (hi - lo) if hi > lo else 0.0


def run(lane: str, rate: int = 30_000, big: int = 100_000, small: int = 200, concurrency: int = 2,
        latency: tuple[float, float] = (0.3, 1.0), before_s: float = 60.0, after_s: float = 60.0,
        warmup_s: float = 15.0, small_timeout_s: float = 600.0) -> dict:
    express_max = 2000 if lane == "express" else 0
    with tempfile.TemporaryDirectory() as tmp:
        big_path, small_path = Path(tmp) / "campaign.csv", Path(tmp) / "urgent.csv"
        write_file(big_path, big, "B", 700_000_000)
        write_file(small_path, small, "S", 800_000_000)
        with PhononSimulator(flows={FLOW: SID}, rate_per_minute=rate, latency_s=latency, seed=1) as sim:
            opts = RunOptions(flow_id=FLOW, api_url=sim.url, security_id=SID, rate=rate,
                              batch_size=fit_batch_size(rate), concurrency=concurrency, out_dir=Path(tmp) / "out",
                              webhook_grace_s=0, stall_timeout_s=600, settings={"express_max_rows": express_max})
            with LocalPipeline(opts, progress=io.StringIO()) as p:
                wiring.set_throttle(None)  # the whole file queued at once, as on AWS
                files = p.upload([big_path])
                big_job = files[0].obj.job_id
                start(p, files)
                t_first = None
                while t_first is None or time.time() < t_first + warmup_s + before_s:
                    time.sleep(1.0)
                    accepted = sim.stats()["accepted"]
                    t_first = float(accepted[0][0]) if accepted else None
                # the drop: the file lands in the bucket, S3 invokes ingest (its own invocation)
                t_drop = time.time()
                put = p.s3.put_object(Bucket=p.bucket, Key="incoming/urgent.csv", Body=small_path.read_bytes())
                obj = ObjectRef(p.bucket, "incoming/urgent.csv", put.get("VersionId"), put.get("ETag"),
                                small_path.stat().st_size)
                queued: list[float] = []

                def ingest_small() -> None:
                    p._ingest_handler(s3_event(obj), FakeContext("ingest", 900))
                    queued.append(time.time())

                threading.Thread(target=ingest_small, name="ingest-small", daemon=True).start()
                small_job = obj.job_id
                deadline = time.time() + small_timeout_s
                while time.time() < deadline:
                    if sum(1 for c in sim.accepted_calls() if job_of(c) == small_job) >= small:
                        break
                    time.sleep(1.0)  # the figures come from accepted-at, not from this poll
                t_small_done = time.time()
                time.sleep(after_s)
                job_item = wiring.store().jobs.get_job(small_job) or {}
                stats = sim.stats()
                calls = sim.accepted_calls()
                p._stop.set()  # the Ctrl-C-like stop: nothing more is sent, the workers end
                p.gate.closed.set()
                for t in p._threads:
                    t.join(timeout=90)
            # leaving the pipeline stops it: nothing more is sent (the big job's rest is not waited for)
    big_t = sorted(float(c["accepted-at"]) for c in calls if job_of(c) == big_job)
    small_t = sorted(float(c["accepted-at"]) for c in calls if job_of(c) == small_job)
    all_t = [(float(c["accepted-at"]), 1) for c in calls]
    first_small = small_t[0] - t_drop if small_t else None
    minute_after = (t_drop, t_drop + 60.0)
    return {
        "lane": lane, "express_max_rows": express_max, "limit_per_minute": rate, "batch_size": fit_batch_size(rate),
        "concurrency": concurrency, "latency_s": list(latency), "big_rows": big, "small_rows": small,
        "small_job_lane": str(job_item.get("lane", "")) or "(chunk queue)",
        "drop_to_small_queued_s": round(queued[0] - t_drop, 1) if queued else None,
        "drop_to_first_small_call_s": round(first_small, 1) if first_small is not None else None,
        "drop_to_last_small_call_s": round(small_t[-1] - t_drop, 1) if small_t else None,
        "small_calls_accepted": len(small_t),
        "big_per_min_minute_before": round(per_minute(big_t, t_drop - 60.0, t_drop)),
        "big_per_min_minute_after": round(per_minute(big_t, *minute_after)),
        "small_in_minute_after": sum(1 for t in small_t if minute_after[0] <= t < minute_after[1]),
        "both_per_min_minute_after": round(per_minute(sorted(big_t + small_t), *minute_after)),
        "big_per_min_whole_run": round(per_minute(big_t, big_t[0] + warmup_s, big_t[-1])) if big_t else 0,
        # the big job's calls in each minute from its first call (the last, partial minute ends at the stop)
        "big_per_minute_series": [sum(1 for t in big_t if big_t[0] + 60 * k <= t < big_t[0] + 60 * (k + 1))
                                  for k in range(int((big_t[-1] - big_t[0]) // 60) + 1)] if big_t else [],
        "drop_at_s_after_first_big_call": round(t_drop - big_t[0], 1) if big_t else None,
        "max_60s_window_all_calls": max_window(all_t),
        "rate_refusals": stats.get("rate_refusals", 0),
        "run_s_after_drop": round(t_small_done + after_s - t_drop, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lane", choices=["express", "none", "both"], default="both",
                   help="express: the express lane (express_max_rows 2000); none: one queue (0); both (default)")
    p.add_argument("--rate", type=int, default=30_000)
    p.add_argument("--big", type=int, default=100_000)
    p.add_argument("--small", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--latency", type=float, nargs=2, default=(0.3, 1.0))
    p.add_argument("--before", type=float, default=60.0, help="seconds of sending at the limit before the drop")
    p.add_argument("--after", type=float, default=60.0, help="seconds kept running after the small file's last call")
    args = p.parse_args(argv)
    lanes = ["express", "none"] if args.lane == "both" else [args.lane]
    for lane in lanes:
        figures = run(lane, args.rate, args.big, args.small, args.concurrency, tuple(args.latency),
                      args.before, args.after)
        print(json.dumps(figures, indent=2), flush=True)
        if lane == "express":
            first = figures["drop_to_first_small_call_s"]
            ok = (first is not None and first < 10 and figures["max_60s_window_all_calls"] <= args.rate
                  and figures["rate_refusals"] == 0)
            print(f"target (first call of the small file < 10 s after the drop, no window over the limit, "
                  f"no refusals): {'met' if ok else 'NOT met'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
