"""argparse ``type=`` functions shared by the command-line tools: bad values fail at parse time
with a message that says what was expected."""
from __future__ import annotations

import argparse
from typing import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def int_list(minimum: int = 1) -> Callable[[str], list[int]]:
    """Comma- (or space-) separated integers, each >= ``minimum``, at least one."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.replace(" ", ",").split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values or any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"expected comma-separated integers >= {minimum}, got {text!r}")
        return values
    return parse


def fraction_list(what: str) -> Callable[[str], list[float]]:
    """Comma-separated numbers in [0, 1] (``what`` names them in errors), at least one."""
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1], got {text!r}") from None
        if not values or any(not 0.0 <= v <= 1.0 for v in values):
            raise argparse.ArgumentTypeError(f"{what} must be in [0, 1], got {text!r}")
        return values
    return parse


def variant(text: str) -> tuple[str, dict]:
    """``name`` or ``name:k=v,...`` (see hf_posenc.variants.parse_variant)."""
    from .variants import parse_variant

    try:
        return parse_variant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
