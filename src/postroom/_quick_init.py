"""A faster ``__init__`` for the frozen, slotted dataclasses made for every message.

A frozen dataclass sets each field through ``object.__setattr__`` (its own ``__setattr__``
refuses), which makes building one about four times slower than building a plain one. The
records below are built a dozen times per message (a parsed address, a claimed row, each SMTP
reply, a delivery result, an attempt, a finish...), so :func:`quick_init` gives a frozen
dataclass an ``__init__`` that stores each field straight into its slot. Nothing else changes:
the fields, their order, defaults and factories, keyword-only fields and ``__post_init__``
behave as the dataclass's own ``__init__`` does, and the instance stays frozen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["quick_init"]

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Replace the ``__init__`` of ``cls``, a ``@dataclass(frozen=True, slots=True)``."""
    if not dataclasses.is_dataclass(cls) or not getattr(cls, "__slots__", None):
        raise TypeError(f"{cls.__name__} is not a slotted dataclass")
    namespace: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    positional: list[str] = []
    keyword_only: list[str] = []
    body: list[str] = []
    for field in dataclasses.fields(cls):
        name = field.name
        namespace[f"_set_{name}"] = getattr(cls, name).__set__
        value = _value(field, namespace)
        body.append(f"    _set_{name}(self, {value})")
        if field.init:
            parameter = f"{name}={_default(field)}" if _has_default(field) else name
            (keyword_only if field.kw_only else positional).append(parameter)
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    signature = ", ".join(["self", *positional, *(["*", *keyword_only] if keyword_only else [])])
    exec(f"def __init__({signature}):\n" + "\n".join(body or ["    pass"]), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)  # noqa: B010 - a method replaced on purpose
    return cls


def _value(field: dataclasses.Field[Any], namespace: dict[str, Any]) -> str:
    """The expression that gives ``field`` its value inside the generated ``__init__``."""
    name = field.name
    if field.default is not dataclasses.MISSING:
        namespace[f"_default_{name}"] = field.default
    if field.default_factory is not dataclasses.MISSING:
        namespace[f"_factory_{name}"] = field.default_factory
        if field.init:
            return f"_factory_{name}() if {name} is _MISSING else {name}"
        return f"_factory_{name}()"
    if not field.init:
        return f"_default_{name}"
    return name


def _has_default(field: dataclasses.Field[Any]) -> bool:
    missing = dataclasses.MISSING
    return field.default is not missing or field.default_factory is not missing


def _default(field: dataclasses.Field[Any]) -> str:
    """The parameter default of a field that has one."""
    if field.default_factory is not dataclasses.MISSING:
        return "_MISSING"
    return f"_default_{field.name}"
