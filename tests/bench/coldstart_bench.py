"""Cold-start benchmark: each handler's import in a fresh interpreter against the bare imports
of the libraries that handler needs.

    python -m tests.bench.coldstart_bench [--runs 9]

A Lambda cold start pays the import of the handler module once per execution environment. The
libraries a handler needs (boto3, requests, phonenumbers, the powertools utilities it uses)
cost what they cost; what our own code adds on top is ours to keep small. For each handler this
runs, in turn and interleaved (so drift of the shared machine hits both alike):

- A: a fresh `python -c` that imports the handler module (with the layer and the function's
  folder on `sys.path`, as on Lambda) and prints how long the import took;
- B: a fresh `python -c` that imports only the handler's declared libraries (`LIBRARIES`).

and prints the median of each and the ratio A/B (target: ≤ 1.25). The X-Ray SDK is not among
the libraries: tracing is disabled by default and must cost nothing at import when it is.
Interpreter start-up is outside both figures (timed inside the child, around the imports).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_RATIO = 1.25

# What each handler legitimately needs; everything else its import pulls in is our cost.
LIBRARIES: dict[str, list[str]] = {
    "ingest": ["boto3", "phonenumbers", "ijson", "pydantic", "aws_lambda_powertools.logging",
               "aws_lambda_powertools.metrics"],
    "dispatch": ["boto3", "requests", "pydantic", "aws_lambda_powertools.logging",
                 "aws_lambda_powertools.metrics", "aws_lambda_powertools.utilities.batch"],
    "webhook": ["boto3", "pydantic", "aws_lambda_powertools.logging", "aws_lambda_powertools.metrics",
                "aws_lambda_powertools.utilities.data_classes", "aws_lambda_powertools.utilities.parameters"],
}

_TIMED = ("import sys, time\n"
          "sys.path[:0] = {path!r}\n"
          "t = time.perf_counter()\n"
          "{imports}\n"
          "print(time.perf_counter() - t)\n")


def _child(path: list[str], modules: list[str]) -> float:
    code = _TIMED.format(path=path, imports="\n".join(f"import {m}" for m in modules))
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(handler: str, runs: int) -> dict:
    path = [str(ROOT / "layers" / "outbound"), str(ROOT / "functions" / handler)]
    _child(path, [f"{handler}_handler"])  # warm the file-system cache and .pyc files
    own, libs = [], []
    for _ in range(runs):
        own.append(_child(path, [f"{handler}_handler"]))
        libs.append(_child(path, LIBRARIES[handler]))
    a, b = statistics.median(own), statistics.median(libs)
    return {"handler": handler, "import_s": round(a, 4), "libraries_s": round(b, 4), "ratio": round(a / b, 2),
            "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args(argv)
    print(f"command: {sys.executable} -m tests.bench.coldstart_bench --runs {args.runs}")
    results = [measure(h, args.runs) for h in LIBRARIES]
    for r in results:
        verdict = "met" if r["ratio"] <= TARGET_RATIO else "NOT met"
        print(f"{r['handler']:9s} handler import {r['import_s'] * 1000:7.1f} ms   its libraries "
              f"{r['libraries_s'] * 1000:7.1f} ms   ratio {r['ratio']:.2f} (target ≤ {TARGET_RATIO}: {verdict})")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
