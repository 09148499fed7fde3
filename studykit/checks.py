"""Parameter checks: one value against its declared type and range, before any work.

Every user-facing setting (a ``run_experiment`` key, a field of a method's ``Config``) is checked
here by type, read from its annotation (``int``, ``float``, ``bool``, ``str``, ``X | None``,
``tuple[float, ...]``), and by range, from a `Range`. A method's Config declares ranges in its
``RANGES`` class attribute; a numeric field it does not name must be finite and >= 0, so a
method added later is checked without writing any checks. A failed check raises `ParamError`
(a ``ValueError``) whose message names the key, the bad value and what is allowed: the command
line prints it as one line.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ParamError(ValueError):
    """A parameter with a bad value; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval of allowed numbers; None leaves a side open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def phrase(self) -> str:
        """For messages: '>= 0', 'in [0, 1)'."""
        text = str(self)
        return f"in {text}" if text[0] in "[(" else text

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}" if self.lo is not None else "any"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return (f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")


NON_NEGATIVE = Range(0)
POSITIVE = Range(0, lo_open=True)
AT_LEAST_1 = Range(1)
FRACTION = Range(0, 1)


def describe_type(tp: Any) -> str:
    """A type annotation in words: ``int | None`` -> 'an integer or None'."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(
            item, describe_type(item))
    return {int: "an integer", float: "a number", bool: "True or False", str: "a string",
            type(None): "None"}.get(tp, getattr(tp, "__name__", str(tp)))


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


# Training runs in float32: a number setting beyond its range (lr=1e300) overflows there.
FLOAT32_MAX = 3.4028234663852886e38


def _holds_float(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType, tuple):
        return any(_holds_float(a) for a in typing.get_args(tp) if a is not Ellipsis)
    return tp is float


def check_value(key: str, value: Any, tp: Any, allowed: Range | None = None,
                choices: tuple | None = None) -> None:
    """Raise `ParamError` unless ``value`` is of type ``tp``, finite (for a number setting:
    within float32's range, in which training computes), inside ``allowed`` and (if given) one
    of ``choices``."""
    if not _matches(value, tp):
        raise ParamError(f"{key} must be {describe_type(tp)}, got {value!r}")
    if choices is not None and value not in choices:
        raise ParamError(f"unknown {key} {value!r}; choose one of: "
                         f"{', '.join(map(str, choices))}")
    for v in _numbers(value):
        if isinstance(v, float) and not math.isfinite(v):
            raise ParamError(f"{key} must be finite, got {value!r}")
        if _holds_float(tp) and abs(v) > FLOAT32_MAX:
            raise ParamError(f"{key} must be finite in float32 (at most {FLOAT32_MAX:.3g} in "
                             f"size), got {value!r}")
        if allowed is not None and not allowed.contains(v):
            raise ParamError(f"{key} must be {allowed.phrase()}, got {value!r}")


def is_numeric(tp: Any) -> bool:
    """Whether ``tp`` (possibly ``X | None`` or a tuple) holds int or float values."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType, tuple):
        return any(is_numeric(a) for a in typing.get_args(tp) if a is not Ellipsis)
    return tp in (int, float)


def _field_rule(cls: type, name: str, tp: Any) -> Range | None:
    """A field's range: the Config's ``RANGES`` entry, else >= 0 for a numeric field."""
    return getattr(cls, "RANGES", {}).get(name, NON_NEGATIVE if is_numeric(tp) else None)


def check_dataclass_fields(cls: type, values: Mapping[str, Any]) -> None:
    """Check ``values`` (field name -> value; the caller has rejected unknown names) against
    dataclass ``cls``'s annotations and its ``RANGES`` / ``CHOICES`` class attributes.

    Raises:
        ParamError: wrong type or out of range.
    """
    hints = typing.get_type_hints(cls)
    choices: Mapping[str, tuple] = getattr(cls, "CHOICES", {})
    for key, value in values.items():
        check_value(key, value, hints[key], _field_rule(cls, key, hints[key]), choices.get(key))


def describe_field(cls: type, name: str) -> tuple[str, str]:
    """(type, allowed values) of a dataclass field as text, for ``studykit list params``."""
    tp = typing.get_type_hints(cls)[name]
    choices = getattr(cls, "CHOICES", {}).get(name)
    if choices is not None:
        return describe_type(tp), ", ".join(map(str, choices))
    allowed = _field_rule(cls, name, tp)
    return describe_type(tp), str(allowed) if allowed is not None else "any"
