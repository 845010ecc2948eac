"""Delivery of results from gilkit's runtime threads to asyncio futures (used by ``_native``)."""

from __future__ import annotations

import asyncio
from typing import Any


def resolve(fut: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    """Set ``fut``'s result or exception, unless it is already done (cancelled meanwhile)."""
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)
