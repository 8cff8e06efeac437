"""Parse and format variant specs: ``NAME[:key=value,key=value,...]``.

    >>> parse_variant("rope:theta=1e4,partial_rotary_factor=0.5")
    ('rope', {'theta': 10000.0, 'partial_rotary_factor': 0.5})
    >>> format_variant("rope", {"theta": 10000.0})
    'rope:theta=10000.0'

Values are typed automatically: ``true``/``false`` -> bool, ``none``/``null`` -> None, integers
(``8192``, ``-1``) -> int, anything ``float()`` accepts (``1e4``, ``0.5``, ``inf``) -> float,
everything else stays a string (quotes around a value are stripped and keep it a string).
The encoding itself validates and coerces further (``apply_posenc`` raises a ``ValueError``).
"""
from __future__ import annotations

import re
from typing import Any

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT = re.compile(r"^[+-]?\d+$")


def parse_value(text: str) -> Any:
    """Auto-type one option value (see the module docstring)."""
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]  # quoted: keep as a string, e.g. '"1e4"'
    low = value.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if low in ("none", "null"):
        return None
    if _INT.match(value):
        return int(value)
    try:
        return float(value)  # 1e4, 0.5, inf, nan
    except ValueError:
        return value


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``"NAME[:k=v,...]"`` -> ``(name, options)``; raises ``ValueError`` for a malformed spec."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty variant spec {spec!r}; expected NAME or NAME:key=value,...")
    name, sep, rest = spec.strip().partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError(f"bad variant name {name!r} in {spec!r}; expected NAME or NAME:key=value,...")
    options: dict[str, Any] = {}
    if sep and not rest.strip():
        raise ValueError(f"variant spec {spec!r} has ':' but no options; expected NAME:key=value,...")
    for item in rest.split(",") if rest.strip() else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not _KEY.match(key) or not value.strip():
            raise ValueError(f"bad option {item.strip()!r} in variant spec {spec!r}; expected key=value")
        if key in options:
            raise ValueError(f"option {key!r} given twice in variant spec {spec!r}")
        options[key] = parse_value(value)
    return name, options


def format_variant(name: str, options: dict[str, Any] | None = None) -> str:
    """The inverse of ``parse_variant`` for values that round-trip (numbers, bools, None, plain strings)."""
    if not options:
        return name
    def fmt(v: Any) -> str:
        if v is None or isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str) and parse_value(v) != v:
            return f'"{v}"'  # e.g. the string "1e4" must stay a string
        return str(v)
    return name + ":" + ",".join(f"{k}={fmt(v)}" for k, v in options.items())


__all__ = ["parse_value", "parse_variant", "format_variant"]
