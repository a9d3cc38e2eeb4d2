"""Argument checks shared by the environments: ValueError naming the owner, the field, the bad value and what is allowed."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(owner: str, name: str, value: Any, low: int, high: int | None = None, odd: bool = False) -> int:
    """Return ``int(value)`` if it is an integer in ``[low, high]`` (odd if asked), else raise ValueError."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, np.integer))
        and value >= low
        and (high is None or value <= high)
    )
    if ok and odd and value % 2 == 0:
        ok = False
    if not ok:
        allowed = f">= {low}" if high is None else f"in {low} .. {high}"
        raise ValueError(f"{owner}: {name} must be {'an odd' if odd else 'an'} integer {allowed}, got {value!r}")
    return int(value)
