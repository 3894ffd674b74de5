"""How numbers and durations are written for people: tables, run names, terminal lines.

Below every layer (like errors.py and args.py), so the search, tracking and reporting
layers write a learning rate the same way: 1.08e-3 and 1.77e-3, never both 0.001.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def number(v: Any, digits: int = 3) -> str:
    """A parameter or metric value: integers as integers, floats with `digits` significant
    digits, small and large ones as 1.08e-3 / 2.5e+5 (no zero-padded exponent)."""
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return ""
    if math.isinf(v) or v == 0:
        return str(v) if math.isinf(v) else "0"
    if abs(v) < 1e-2 or abs(v) >= 1e5:
        mantissa, exp = f"{v:.{digits - 1}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        return f"{mantissa}e{int(exp)}"
    return f"{v:.{digits}g}"


def duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def first_comment(path: Path) -> str:
    """A YAML file's first comment line: what a shipped config or study says it is."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""
