"""Dependency floors leave out releases with known security problems."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# package -> the lowest acceptable release, and why
FLOORS = {
    "aiosmtpd": ((1, 4, 6), "SMTP smuggling (CVE-2024-27305), STARTTLS injection (CVE-2024-34083)"),
    "redis": ((6, 0), "TLS host names checked by default only from 6.0"),
    "idna": ((3, 7), "IDNA 2008 with UTS #46; 3.7 fixes a denial of service (CVE-2024-3651)"),
}


def numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def requirements() -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    found: list[str] = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        found += extra
    return found


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_every_requirement_has_the_safe_floor(package: str) -> None:
    floor, why = FLOORS[package]
    specs = [r for r in requirements() if re.match(rf"{package}(\[|>|=|<|~|$)", r)]
    assert specs, f"{package} is not a dependency"
    for spec in specs:
        match = re.search(r">=\s*([\d.]+)", spec)
        assert match, f"{spec!r} has no floor ({why})"
        assert numbers(match.group(1)) >= floor, f"{spec!r} admits releases with: {why}"


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_the_installed_release_is_above_the_floor(package: str) -> None:
    assert numbers(version(package)) >= FLOORS[package][0]
