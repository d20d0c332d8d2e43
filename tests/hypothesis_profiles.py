"""Hypothesis profiles for the property tests: ``ci`` when ``CI=true``, else ``dev``.

Use as a decorator: ``@PROFILE``. The ``ci`` profile runs several times the examples (enough to
find rare combinations), still within a minute for the whole property run on a shared machine.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILE"]

_COMMON = {
    "deadline": None,  # a shared machine stalls now and then; slowness is not a failure here
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
    "print_blob": True,
}
settings.register_profile("dev", max_examples=60, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("ci", max_examples=500, **_COMMON)  # type: ignore[arg-type]

_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: the selected profile, as a decorator for ``@given`` tests
PROFILE = settings(settings.get_profile("ci" if _CI else "dev"))
