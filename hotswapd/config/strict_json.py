"""Reading a JSON config file (the design's own format) as strictly as TOML is read."""

from __future__ import annotations

import json
import math
from typing import Any


def json_object(text: str) -> dict[str, Any]:
    """A JSON config: an object, with no key given twice (JSON would keep the last silently;
    TOML refuses it, and so does this)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:  # a set as keys arrive: 100,000 keys must not cost n squared
            if key in seen:
                raise ValueError(f"key {key!r} is given twice")
            seen[key] = value
        return seen

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number a config can hold")

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):  # 1e400 reads as infinity
            raise ValueError(f"{literal[:40]} is not a number a config can hold")
        return value

    data = json.loads(text, object_pairs_hook=unique, parse_constant=no_constant, parse_float=finite)
    if not isinstance(data, dict):
        raise ValueError(f"the top level must be an object, not {type(data).__name__}")
    return data
