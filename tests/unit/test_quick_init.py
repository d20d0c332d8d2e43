"""quick_init: the same instances as the dataclass's own ``__init__``, still frozen."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from postroom._quick_init import quick_init
from postroom.store.records import Abandoned, Claimed
from postroom.transport.base import DeliveryResult, Outcome, Reply


def _pair() -> tuple[type[Any], type[Any]]:
    """Two identical classes; the first gets quick_init."""

    def make() -> type[Any]:
        @dataclass(frozen=True, slots=True)
        class Record:
            a: int
            b: str = "b"
            c: list[int] = field(default_factory=list)
            d: int = field(default=0, init=False)
            e: int = field(default=5, kw_only=True)

            def __post_init__(self) -> None:
                object.__setattr__(self, "d", self.a * 2)

        return Record

    return quick_init(make()), make()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, "x", [3]), {"e": 9}), ((), {"a": 2, "c": [1]}), ((4,), {"b": "y"})],
)
def test_the_same_fields_as_the_dataclass_init(args: tuple[Any, ...], kwargs: Any) -> None:
    quick, plain = _pair()
    made = quick(*args, **kwargs)
    assert dataclasses.astuple(made) == dataclasses.astuple(plain(*args, **kwargs))
    assert made.d == made.a * 2  # __post_init__ ran


def test_the_instance_stays_frozen_and_each_gets_its_own_default() -> None:
    quick, _ = _pair()
    made = quick(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.a = 2
    assert made.c is not quick(1).c


@pytest.mark.parametrize(
    ("args", "kwargs"), [((), {}), ((1, "b", [], 3), {}), ((1,), {"d": 1}), ((1,), {"z": 1})]
)
def test_wrong_arguments_fail_as_they_do_without_it(args: tuple[Any, ...], kwargs: Any) -> None:
    quick, plain = _pair()
    with pytest.raises(TypeError):
        plain(*args, **kwargs)
    with pytest.raises(TypeError, match="__init__"):
        quick(*args, **kwargs)


def test_refuses_a_class_without_slots() -> None:
    @dataclass(frozen=True)
    class Loose:
        a: int

    with pytest.raises(TypeError, match="not a slotted dataclass"):
        quick_init(Loose)


def test_records_of_the_package_keep_equality_hashing_and_inheritance() -> None:
    assert Reply(250, "ok", "2.0.0") == Reply(250, "ok", "2.0.0")
    assert hash(Reply(250, "ok")) == hash(Reply(250, "ok"))
    result = DeliveryResult(Outcome.SENT, Reply(250, "ok"))
    assert result.accepted == () and result.refused == {} and result.replies == {}
    names = [f.name for f in dataclasses.fields(Abandoned)]
    assert names[: len(dataclasses.fields(Claimed))] == [
        f.name for f in dataclasses.fields(Claimed)
    ]
