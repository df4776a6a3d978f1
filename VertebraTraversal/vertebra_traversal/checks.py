"""Type checks for settings read from JSON, model metadata or the command line.

Python counts ``True`` and ``False`` as integers, so ``isinstance(value, int)`` alone would accept a bool where a
number is meant; every layer checks its numeric settings through these two instead.
"""
from __future__ import annotations


def is_number(value: object) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value: object) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)
