"""`make bench`: runs every benchmark's main() in turn (``python -m tests.bench.run_all``)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tests.bench import coldstart_bench, cost_bench, fair_bench, ingest_bench, rate_bench

# Each entry is (name, a bench's main called with no arguments); add new benches here.
# A bench prints its own figures; `make bench` runs them all with their defaults.
BENCHES: list[tuple[str, Callable[[], object]]] = [
    ("cold start: handler imports against their libraries", lambda: coldstart_bench.main([])),
    ("ingest", lambda: ingest_bench.main([])),
    ("rate limit", lambda: rate_bench.main([])),
    ("rate limit at 30,000/min, the checker's way (separate processes)",
     lambda: rate_bench.main(["--rate", "30000", "--minutes", "2", "--concurrency", "2", "--processes"])),
    ("cost per million calls: 100,000 rows at 30,000/min", lambda: cost_bench.main([])),
    ("fair share: a 200-row file dropped while a 100,000-row job sends at 30,000/min (with and without "
     "the express lane)", lambda: fair_bench.main([])),
]


def main() -> int:
    for name, bench in BENCHES:
        print(f"== {name} ==", flush=True)
        bench()
    return 0


if __name__ == "__main__":
    sys.exit(main())
