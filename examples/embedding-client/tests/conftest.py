"""Fixtures for the gilkit_embed tests: a fault-injecting loopback server and clients of it."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from gilkit_embed import EmbeddingClient, EmbeddingConfig
from gilkit_embed.testing import FaultServer


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultServer]:
    with FaultServer(timeout_sleep=3.0) as server:
        yield server


@pytest.fixture
def make_client(fault_server: FaultServer) -> Callable[..., EmbeddingClient]:
    """Clients of the module's fault server, with fast retries (10 ms first backoff step)."""

    def make(**overrides: Any) -> EmbeddingClient:
        options: dict[str, Any] = dict(
            api_key="test-key",
            base_url=fault_server.base_url,
            initial_retry_delay=0.01,
            circuit_breaker_threshold=None,
        )
        options.update(overrides)
        return EmbeddingClient(EmbeddingConfig.openai(**options))

    return make
