"""The shape check of a stats dict: its exact key set and each value's exact type, so that a
renamed key or a changed unit (an int where float seconds are due) fails. gilkit's convention:
durations are float seconds under a key ending in `_s`, counts are ints, a latency is a nested dict
of `count`, `p50_s`, `p99_s`, `max_s`, `mean_s` (see `gilkit::stats`)."""

from __future__ import annotations

from typing import Any

LATENCY: dict[str, type | tuple[type, ...]] = {
    "count": int,
    "p50_s": float,
    "p99_s": float,
    "max_s": float,
    "mean_s": float,
}


def assert_schema(stats: Any, schema: dict[str, type | tuple[type, ...]]) -> None:
    """Assert that ``stats`` is a dict with exactly the keys of ``schema``, each value of exactly
    the type given (``bool`` is not taken for ``int``); a tuple of types allows any of them."""
    assert type(stats) is dict, type(stats)
    assert sorted(stats) == sorted(schema), f"keys: {sorted(stats)} != {sorted(schema)}"
    for key, expected in schema.items():
        allowed = expected if isinstance(expected, tuple) else (expected,)
        assert type(stats[key]) in allowed, f"{key}: {type(stats[key]).__name__} is not {allowed}"
