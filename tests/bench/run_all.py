"""`make bench`: runs every benchmark's main() in turn (``python -m tests.bench.run_all``)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tests.bench import ingest_bench

# Each entry is a bench's main(argv) -> dict of results; add new benches here.
BENCHES: list[tuple[str, Callable[[list[str]], dict]]] = [
    ("ingest", ingest_bench.main),
]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for name, bench in BENCHES:
        print(f"== {name} ==", flush=True)
        bench(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
