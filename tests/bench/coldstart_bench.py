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

and prints the median of each and the ratio A/B (target: ≤ 1.25), and the same ratio of the
fastest run of each side (steadier on a busy machine). The X-Ray SDK is not among
the libraries: tracing is disabled by default and must cost nothing at import when it is.
Interpreter start-up is outside both figures (timed inside the child, around the imports).

A imports the handler and then its declared libraries (a no-op for those the handler already
imported): a handler that merely puts off importing a library it needs on every call (to its
first invocation) gains nothing here; only what it never needs on that path is saved.

Bytecode (`--bytecode`): `cached` (default) gives every child one private `__pycache__` tree
(PYTHONPYCACHEPREFIX, written during the warm-up, even where PYTHONDONTWRITEBYTECODE is set
in the environment), so neither side compiles source: the case of a layer shipped with
compiled bytecode. `source` copies our code (layer and handler folders) to a temporary folder
and forbids writing bytecode, so our modules are compiled from source on every import while
the libraries use the bytecode pip wrote when it installed them: the case of a layer that
ships `.py` files only (Lambda's /opt is read-only, so nothing is cached between cold starts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_RATIO = 1.25

# What each handler legitimately needs; everything else its import pulls in is our cost.
# Every handler's logger masks each line with powertools' data masking (observability.py);
# ingest and dispatch read flows' secrets with powertools' parameters (flows.py); the webhook
# validates a push with powertools' parser (webhook.py); ingest reads its S3, EventBridge and
# SQS events with powertools' event data classes, and dispatch's batch utility brings them. "pydantic" is the library as our modules use it: imported, and one model
# class built (pydantic imports its schema machinery, and looks for plugins among the installed
# distributions, on the first model class, not on `import pydantic`).
_STATEMENTS = {
    "pydantic": "from pydantic import BaseModel, Field\nclass _Model(BaseModel):\n    x: int = Field(default=0, ge=0)",
}
_LOGGING = ["aws_lambda_powertools.logging", "aws_lambda_powertools.metrics",
            "aws_lambda_powertools.utilities.data_masking"]
LIBRARIES: dict[str, list[str]] = {
    "ingest": ["boto3", "phonenumbers", "ijson", "pydantic", *_LOGGING,
               "aws_lambda_powertools.utilities.parameters", "aws_lambda_powertools.utilities.data_classes"],
    "dispatch": ["boto3", "requests", "pydantic", *_LOGGING, "aws_lambda_powertools.utilities.batch",
                 "aws_lambda_powertools.utilities.parameters"],
    "webhook": ["boto3", "pydantic", *_LOGGING, "aws_lambda_powertools.utilities.data_classes",
                "aws_lambda_powertools.utilities.parameters", "aws_lambda_powertools.utilities.parser"],
    "watchdog": ["boto3", "pydantic", *_LOGGING],
    # the intake reads SQS batches with powertools' batch utility and builds pydantic models
    "intake": ["boto3", "pydantic", *_LOGGING, "aws_lambda_powertools.utilities.batch"],
}

_TIMED = ("import sys, time\n"
          "sys.path[:0] = {path!r}\n"
          "t = time.perf_counter()\n"
          "{imports}\n"
          "print(time.perf_counter() - t)\n")


def _child(path: list[str], modules: list[str], env: dict[str, str]) -> float:
    code = _TIMED.format(path=path, imports="\n".join(_STATEMENTS.get(m, f"import {m}") for m in modules))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _env(bytecode: str, cache: Path) -> dict[str, str]:
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if bytecode == "cached":
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _code_root(bytecode: str, scratch: Path) -> Path:
    """Where the layer and the functions are read from: the repository, or (`source`) a copy
    without any `__pycache__`, so that our modules are compiled on every import."""
    if bytecode == "cached":
        return ROOT
    copy = scratch / "code"
    if not copy.exists():
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "layers" / "outbound", copy / "layers" / "outbound", ignore=ignore)
        shutil.copytree(ROOT / "functions", copy / "functions", ignore=ignore)
    return copy


def measure(handler: str, runs: int, bytecode: str = "cached", scratch: Path | None = None) -> dict:
    scratch = scratch or Path(tempfile.mkdtemp(prefix="coldstart-"))
    root = _code_root(bytecode, scratch)
    env = _env(bytecode, scratch / "pycache")
    path = [str(root / "layers" / "outbound"), str(root / "functions" / handler)]
    own_imports = [f"{handler}_handler", *LIBRARIES[handler]]
    _child(path, own_imports, env)  # warm the file-system cache (and, `cached`, write the bytecode)
    _child(path, LIBRARIES[handler], env)
    own, libs = [], []
    for _ in range(runs):
        own.append(_child(path, own_imports, env))
        libs.append(_child(path, LIBRARIES[handler], env))
    a, b = statistics.median(own), statistics.median(libs)
    # The fastest run of each side is the one the shared machine disturbed least: on a busy
    # machine its ratio moves less from run to run than the medians'.
    return {"handler": handler, "import_s": round(a, 4), "libraries_s": round(b, 4), "ratio": round(a / b, 2),
            "min_import_s": round(min(own), 4), "min_libraries_s": round(min(libs), 4),
            "min_ratio": round(min(own) / min(libs), 2), "runs": runs, "bytecode": bytecode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--bytecode", choices=("cached", "source"), default="cached",
                    help="cached: no side compiles (default); source: our modules compiled on every import")
    ap.add_argument("--handler", action="append", choices=sorted(LIBRARIES),
                    help="measure only this handler (repeatable); default: all")
    args = ap.parse_args(argv)
    extra = "".join(f" --handler {h}" for h in args.handler or ())
    print(f"command: {sys.executable} -m tests.bench.coldstart_bench --runs {args.runs} --bytecode {args.bytecode}"
          f"{extra}")
    with tempfile.TemporaryDirectory(prefix="coldstart-") as scratch:
        results = [measure(h, args.runs, args.bytecode, Path(scratch)) for h in args.handler or LIBRARIES]
    for r in results:
        verdict = "met" if r["ratio"] <= TARGET_RATIO else "NOT met"
        print(f"{r['handler']:9s} handler import {r['import_s'] * 1000:7.1f} ms   its libraries "
              f"{r['libraries_s'] * 1000:7.1f} ms   ratio {r['ratio']:.2f} (target ≤ {TARGET_RATIO}: {verdict})"
              f"   fastest runs {r['min_import_s'] * 1000:.1f} / {r['min_libraries_s'] * 1000:.1f} ms = {r['min_ratio']:.2f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
