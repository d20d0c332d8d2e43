"""Run every benchmark in this folder and print one line per measurement (``make bench``).

Each script can also run alone (``python benchmarks/bench_e2e.py --help``). Figures on a shared
machine vary from run to run: compare the ratios each script reports against the baseline it
measures in the same run, not absolute numbers across runs.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

SCRIPTS = [
    "bench_message",
    "bench_enqueue",
    "bench_queue",
    "bench_store",
    "bench_e2e",
    "bench_sink",
    "bench_slow_relay",
    "bench_isolation",
    "bench_window",
    "bench_backlog",
    "bench_django",
    "bench_web",
]


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    failed = []
    for name in SCRIPTS:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(name).run()  # prints each row as it completes
        except Exception as exc:  # one broken benchmark must not hide the others
            print(f"   failed: {type(exc).__name__}: {exc}")
            failed.append(name)
            continue
        print(f"   ({time.perf_counter() - started:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
