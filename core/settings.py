"""Settings as dataclasses: each field declared once with its default, help and range, built from
strings (the command line, TOML presets) with types coerced and unknown keys refused."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any

from core.errors import UsageError


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its help and its range (inclusive `minimum`/`maximum`, exclusive
    `above`/`below`, or `choices`), checked by `check_ranges`."""
    metadata = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "below": below,
        "choices": choices,
    }
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def range_text(meta: typing.Mapping[str, Any]) -> str:
    """The range a setting takes, in words (for errors and the settings table)."""
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    parts = []
    if meta.get("minimum") is not None:
        parts.append(f"at least {meta['minimum']:g}")
    if meta.get("above") is not None:
        parts.append(f"above {meta['above']:g}")
    if meta.get("below") is not None:
        parts.append(f"below {meta['below']:g}")
    if meta.get("maximum") is not None:
        parts.append(f"at most {meta['maximum']:g}")
    return " and ".join(parts)


def check_ranges(obj: Any, where: str) -> None:
    """Refuse any field of dataclass `obj` outside its declared range, naming it and the range."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{where}.{f.name}"
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{name} must be a finite number, got {value}")
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise UsageError(f"{name} must be {range_text(meta)}, got {value!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        low, high = meta.get("minimum"), meta.get("maximum")
        above, below = meta.get("above"), meta.get("below")
        if (
            (low is not None and value < low)
            or (high is not None and value > high)
            or (above is not None and value <= above)
            or (below is not None and value >= below)
        ):
            hint = f" ({meta['help']})" if meta.get("help") else ""
            raise UsageError(f"{name} must be {range_text(meta)}, got {value!r}{hint}")


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn `value` (often a string from the command line) into `annotation`'s type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(value, options[0], where)
    if origin is list:
        (item_type,) = typing.get_args(annotation) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where}: expected a comma-separated list, got {value!r}")
        return [coerce(v, item_type, where) for v in value]
    if origin is dict or annotation is dict or annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise UsageError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value) if annotation is float else _to_int(value)
        except (TypeError, ValueError):
            kind = "an integer" if annotation is int else "a number"
            raise UsageError(f"{where}: expected {kind}, got {value!r}") from None
        return number
    if annotation is str:
        return str(value)
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        number = float(value)
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    return int(value)


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build `cls` from `values`, coercing types; an unknown key is an error naming it."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        known = f"Known fields: {', '.join(names)}" if names else "It takes no settings"
        raise UsageError(f"unknown {where} field(s): {', '.join(unknown)}. {known}")
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)
