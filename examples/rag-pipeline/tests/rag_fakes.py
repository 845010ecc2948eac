"""Test doubles for the gilkit_rag suite: the bundled corpus's path and a deterministic,
fault-injecting embedder. A module of its own (not conftest.py) so tests can import it by a name no
other test folder uses."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Callable

import numpy as np

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def hash_vector(text: str, dim: int = 32) -> np.ndarray:
    """A vector that depends only on the text: equal texts, equal vectors; others nearly orthogonal."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class HashEmbedder:
    """The test embedder: fast, deterministic, and able to fail on purpose.

    ``fail_if(text)`` true for any text of a batch makes that batch raise ``ConnectionError``;
    ``delay`` seconds are slept per batch (to make an ingest slow enough to kill).
    """

    def __init__(self, fail_if: Callable[[str], bool] | None = None, delay: float = 0.0, model_id: str = "test/hash"):
        self.model_id = model_id
        self.fail_if = fail_if
        self.delay = delay
        self.calls = 0
        self.texts = 0
        self.failed_calls = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        # Picklable (the Ray engine sends the embedder to its workers): counters restart at zero.
        state = dict(self.__dict__, calls=0, texts=0, failed_calls=0)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.texts += len(texts)
        if self.delay:
            import time

            time.sleep(self.delay)
        if self.fail_if is not None and any(self.fail_if(t) for t in texts):
            with self._lock:
                self.failed_calls += 1
            raise ConnectionError("injected embedding failure")
        return np.stack([hash_vector(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return hash_vector(text)
