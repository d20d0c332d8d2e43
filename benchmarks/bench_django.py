"""Django benchmark: postroom's email backend beside django-post_office, in the same run.

Rows (one per backend and measurement):

* ``send_mass_mail``: emails queued per second through ``send_mass_mail`` (one call, N emails);
* ``message_send``: emails queued per second through ``EmailMessage.send()`` in a loop;
* ``po_send_many`` / ``po_mail_send``: django-post_office's own ``send_many`` and ``mail.send``;
* ``view_send_mail``: the time a Django view spends in ``send_mail``, median and p99 over many
  requests through Django's test client.

postroom's rates count until the emails are in its queue (``flush()`` returned), so they compare
with post_office's, which are in its database when the call returns. Both use SQLite, as each
does out of the box: postroom its embedded queue, post_office Django's database.

django-post_office is never a dependency of postroom: the benchmark runs in a virtual
environment of its own, created on first use under the temporary folder (or
``$POSTROOM_BENCH_CACHE``), holding Django, django-post_office and this postroom checkout. If it
cannot be created (no network, no package), postroom's rows are measured alone and the row says
why post_office is missing.

    python benchmarks/bench_django.py [--emails 2000] [--requests 500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["django-post-office>=3.8"]


def bench_env() -> Path | None:
    """The benchmark's own interpreter with Django and django-post_office, or None."""
    import django

    cache = Path(os.environ.get("POSTROOM_BENCH_CACHE", tempfile.gettempdir()))
    home = cache / "postroom-bench-django"
    python = home / "bin" / "python"
    stamp = home / ".installed"
    if stamp.exists():
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    wanted = [f"Django=={django.get_version()}", *PACKAGES, "-e", str(ROOT)]
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *wanted],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"   cannot install django-post_office: {done.stderr.strip()[-300:]}")
        return None
    stamp.touch()
    return python


def run(emails: int = 2000, requests: int = 500) -> list[dict[str, object]]:
    python = bench_env()
    worker = Path(__file__).resolve().parent / "django_worker.py"
    args = [str(worker), "--emails", str(emails), "--requests", str(requests)]
    if python is None:
        args += ["--postroom-only"]
        python = Path(sys.executable)
    with tempfile.TemporaryDirectory(prefix="postroom-bench-django-") as folder:
        done = subprocess.run(
            [str(python), *args], cwd=folder, capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"the Django worker failed: {done.stderr.strip()[-2000:]}")
    rows: list[dict[str, object]] = [json.loads(line) for line in done.stdout.splitlines()]
    for row in rows:
        print("  ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=2000, help="emails per rate row")
    parser.add_argument("--requests", type=int, default=500, help="view requests timed")
    args = parser.parse_args()
    run(emails=args.emails, requests=args.requests)


if __name__ == "__main__":
    main()
