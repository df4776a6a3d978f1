"""Type checks for numeric settings (``checks.py``)."""
from __future__ import annotations

from vertebra_traversal.checks import is_integer, is_number


def test_a_bool_is_neither_a_number_nor_an_integer():
    assert is_number(3) and is_number(2.5) and is_integer(3)
    assert not is_number(True) and not is_integer(False)
    assert not is_integer(2.0) and not is_number("2") and not is_number(None) and not is_integer([1])
