"""Fast-sink comparison: postroom, the smtplib ceiling and django-post_office, one smtp-sink.

In one run, against one Postfix ``smtp-sink`` (which accepts every message and keeps none):

1. the ceiling: Python ``smtplib`` with 4 threads, each on one reused connection, sending the
   small email of ``bench_e2e`` straight to the sink; the median of three runs just before and
   three just after postroom's measurement;
2. postroom end to end: N emails enqueued (SQLite queue, SQLite database), then
   ``postroom serve`` timed until every message is ``sent`` (``bench_e2e.throughput``), once
   with one dispatcher process and once with two (``email.server.processes: 2``);
3. django-post_office with its defaults on SQLite: the same emails (text and HTML) queued with
   ``mail.send_many`` (not timed), then ``send_queued_mail`` timed with its defaults (1 process,
   batches of 100, 5 threads per process, a log row per email) until it returns, every email
   sent through Django's SMTP backend to the sink. It runs in the virtual environment of
   ``bench_django`` (``bench_django.bench_env()``), never in postroom's; see
   ``post_office_worker.py``. If that environment cannot be created, the row says so.

It prints one line per figure, then for each number of processes postroom / ceiling (target at
least 0.75) and postroom / post_office (target at least 5). Rates are per second, so
post_office may be given fewer messages (``--post-office-messages``) when it is slow.

    python benchmarks/bench_sink.py [--messages 20000] [--post-office-messages N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import bench_e2e
from bench_django import bench_env

CEILING_TARGET = 0.75
POST_OFFICE_TARGET = 5.0
#: dispatcher processes of postroom's rows: one, and one per core of a 2-core machine
PROCESSES = (1, 2)


def ceiling_and_postroom(
    port: int, messages: int
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The smtplib ceiling (runs before and after) and postroom's end-to-end rate with one and
    with two dispatcher processes (``email.server.processes``)."""
    before = bench_e2e.ceiling_runs(port, messages)
    rates = {n: bench_e2e.throughput("sqlite", n, port, messages)["rate"] for n in PROCESSES}
    runs = before + bench_e2e.ceiling_runs(port, messages)
    ceiling: dict[str, object] = {
        "bench": "smtplib 4 threads (ceiling)",
        "messages": messages,
        "msgs_per_s": round(statistics.median(runs)),
        "runs": f"{min(runs):.0f}-{max(runs):.0f}",
    }
    rows: list[dict[str, object]] = [
        {
            "bench": f"postroom e2e sqlite queue + sqlite db, {n} process{'es' if n > 1 else ''}",
            "messages": messages,
            "msgs_per_s": round(rate),
        }
        for n, rate in rates.items()
    ]
    return ceiling, rows


def post_office(port: int, messages: int) -> dict[str, object]:
    """django-post_office's ``send_queued_mail`` rate, or a row saying why it was skipped."""
    name = "django-post_office send_queued_mail (defaults), sqlite"
    python = bench_env()
    if python is None:
        return {"bench": name, "skipped": "django-post_office could not be installed"}
    worker = Path(__file__).resolve().parent / "post_office_worker.py"
    command = [str(python), str(worker), "--port", str(port), "--messages", str(messages)]
    with tempfile.TemporaryDirectory(prefix="postroom-bench-po-") as folder:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"bench": name, "skipped": f"worker failed: {done.stderr.strip()[-300:]}"}
    result = json.loads(done.stdout.splitlines()[-1])
    if result["sent"] != messages:
        raise RuntimeError(f"post_office sent {result['sent']} of {messages}: {result}")
    return {
        "bench": name,
        "version": result["post_office_version"],
        "django": result["django_version"],
        "messages": messages,
        "msgs_per_s": round(result["rate"]),
    }


def ratio_row(
    name: str, top: dict[str, object], bottom: dict[str, object], target: float
) -> dict[str, object]:
    if "msgs_per_s" not in bottom:
        return {"ratio": name, "skipped": "no figure to compare with"}
    value = float(str(top["msgs_per_s"])) / float(str(bottom["msgs_per_s"]))
    return {"ratio": name, "value": round(value, 3), "target": f">= {target}"}


def show(row: dict[str, object]) -> None:
    print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)


def run(messages: int = 20000, post_office_messages: int | None = None) -> list[dict[str, object]]:
    binary = bench_e2e.find_smtp_sink()
    if binary is None:
        print("smtp-sink not found (install Postfix): fast-sink comparison skipped")
        return []
    sink = bench_e2e.Sink(binary)
    try:
        ceiling, postroom = ceiling_and_postroom(sink.port, messages)
        show(ceiling)
        for row in postroom:
            show(row)
        po_count = post_office_messages or messages
        po = post_office(sink.port, po_count)
        if po_count != messages:
            po["note"] = f"{po_count} messages, not {messages}: rates are per second"
        show(po)
    finally:
        sink.stop()
    ratios = []
    for n, row in zip(PROCESSES, postroom, strict=True):
        ratios.append(ratio_row(f"postroom ({n}) / smtplib ceiling", row, ceiling, CEILING_TARGET))
        ratios.append(ratio_row(f"postroom ({n}) / post_office", row, po, POST_OFFICE_TARGET))
    for row in ratios:
        show(row)
    return [ceiling, *postroom, po, *ratios]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument(
        "--post-office-messages",
        type=int,
        default=None,
        help="messages for django-post_office (default: --messages); rates are per second",
    )
    args = parser.parse_args()
    run(args.messages, args.post_office_messages)


if __name__ == "__main__":
    main()
