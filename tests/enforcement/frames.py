"""What a client reads in governed frames, apart from the `policy` objects (which name the terms
a rule found, wherever the API's frame carries them: top level, or inside an error object)."""

from __future__ import annotations

from typing import Any


def without_policy_objects(value: Any) -> Any:
    """`value` with every `policy` key removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_policy_objects(v) for k, v in value.items() if k != "policy"}
    if isinstance(value, list):
        return [without_policy_objects(v) for v in value]
    return value
