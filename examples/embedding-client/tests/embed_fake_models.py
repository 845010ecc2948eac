"""Small embedding callables for the service tests (importable as ``embed_fake_models:NAME`` by the CLI
when this directory is on ``PYTHONPATH``)."""

from __future__ import annotations

import threading
import time

import numpy as np

from gilkit_embed.testing import expected_embedding

DIM = 8


def exact(texts: list[str]) -> np.ndarray:
    """The fault server's vectors: lets tests check each vector belongs to its text."""
    return np.array([expected_embedding(t, DIM) for t in texts], dtype=np.float64)


def as_lists(texts: list[str]) -> list[list[float]]:
    """Same vectors as plain lists of floats."""
    return [expected_embedding(t, DIM) for t in texts]


def fails_on_boom(texts: list[str]) -> np.ndarray:
    """Raises when any text is ``"boom"``."""
    if "boom" in texts:
        raise ValueError("boom is not embeddable")
    return exact(texts)


def wrong_count(texts: list[str]) -> np.ndarray:
    """One vector too few."""
    return exact(texts)[:-1]


class Slow:
    """Sleeps ``seconds`` per call (GIL released, like a real model's native code); counts calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0
        self.sizes: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.sizes.append(len(texts))
        time.sleep(self.seconds)
        return exact(texts)
