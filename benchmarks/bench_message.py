"""Message benchmark: what rendering and serialising one Email costs.

Measured per call, median and p99, for two emails:

* small: text + HTML, two recipients, a short subject (the common transactional email);
* 1 MB attachment: the same email with one 1 MiB PDF-like attachment.

Operations:

* ``to_bytes()``: validate and render RFC 5322 bytes (the dispatcher does this per attempt);
* ``to_dict()`` + ``json.dumps``: the snapshot taken on every ``enqueue()``.

Targets for the small email: ``to_bytes()`` well under 1 ms, ``to_dict()`` + ``json.dumps``
around 10-20 µs. Absolute figures on a shared machine vary from run to run.

    python benchmarks/bench_message.py [--calls 2000]

``run()`` returns the rows for ``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import time
from collections.abc import Callable

from postroom.message import Email

SMALL_TO_BYTES_TARGET_US = 1000.0


def small_email() -> Email:
    return Email(
        from_="Jordan Wright <jordan@example.com>",
        to=["alice@example.com", "Bob <bob@example.com>"],
        subject="Your order 1042 has shipped",
        text="Hello Alice,\n\nyour order 1042 is on its way.\n\nThanks,\nthe shop\n",
        html=(
            "<p>Hello Alice,</p><p>your order <b>1042</b> is on its way.</p>"
            "<p>Thanks,<br>the shop</p>"
        ),
    )


def attachment_email() -> Email:
    email = small_email()
    email.attach(os.urandom(1024 * 1024), "invoice-1042.pdf")
    return email


def snapshot(email: Email) -> str:
    """What enqueue() does with an email: take its dict form and serialise it."""
    return json.dumps(email.to_dict())


def measure(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """(median, p99) of one call in microseconds, after a short warm-up."""
    for _ in range(min(50, calls)):
        call()
    samples: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(calls):
            start = time.perf_counter_ns()
            call()
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        if gc_was_enabled:
            gc.enable()
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples), p99


def run(calls: int = 2000) -> list[dict[str, object]]:
    """Measure every (email, operation) pair; one row each with median_us and p99_us, printed
    as it completes."""
    rows: list[dict[str, object]] = []
    for label, email, count in (
        ("small text+html", small_email(), calls),
        ("1 MB attachment", attachment_email(), max(20, calls // 50)),
    ):
        email.ensure_identity()
        size = len(email.to_bytes())
        operations: list[tuple[str, Callable[[], object]]] = [
            ("to_bytes()", email.to_bytes),
            ("to_dict()+json.dumps", functools.partial(snapshot, email)),
        ]
        for operation, call in operations:
            median_us, p99_us = measure(call, count)
            row: dict[str, object] = {
                "benchmark": "message",
                "email": label,
                "operation": operation,
                "calls": count,
                "bytes": size,
                "median_us": round(median_us, 1),
                "p99_us": round(p99_us, 1),
            }
            rows.append(row)
            print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per small-email operation")
    args = parser.parse_args()
    rows = run(args.calls)
    small = next(
        r for r in rows if r["email"] == "small text+html" and r["operation"] == "to_bytes()"
    )
    median = float(str(small["median_us"]))
    verdict = "ok" if median < SMALL_TO_BYTES_TARGET_US else "SLOWER THAN TARGET"
    target = f"target < {SMALL_TO_BYTES_TARGET_US:.0f} µs"
    print(f"\nsmall to_bytes() median {median} µs ({target}): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
