"""Type stubs of the native module (Rust, PyO3)."""

__all__ = [
    "EmbeddingClient",
    "EmbeddingConfig",
    "EmbeddingService",
    "FaultServer",
    "configure_runtime",
    "expected_embedding",
    "runtime_info",
    "system_info",
]

from typing import Any, Awaitable, Callable, Literal, Optional, Sequence, TypedDict, Union, final, overload

import numpy as np
import numpy.typing as npt

from .errors import EmbeddingError

_Vector = list[float]
_Matrix = list[list[float]]

class _Latency(TypedDict):
    count: int
    p50_s: float
    p99_s: float
    max_s: float
    mean_s: float

class _BatchStats(TypedDict):
    total_batches: int
    successful_batches: int
    failed_batches: int
    total_embeddings: int
    prompt_tokens: int
    latency: _Latency

class _BatchResult(TypedDict):
    embeddings: list[Optional[Union[_Matrix, npt.NDArray[np.float32]]]]
    errors: list[Optional[EmbeddingError]]
    stats: _BatchStats
    duration_s: float

@final
class EmbeddingConfig:
    """How to reach an embedding model: an OpenAI-compatible endpoint or an in-process callable."""

    @staticmethod
    def openai(
        api_key: Optional[str] = None,
        model: Optional[str] = None,
        base_url: Optional[str] = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        dimensions: Optional[int] = None,
        *,
        encoding_format: Literal["float", "base64"] = "base64",
        max_batch_size: int = 2048,
        max_concurrency: int = 64,
        connect_timeout: float = 5.0,
        requests_per_minute: Optional[int] = None,
        tokens_per_minute: Optional[int] = None,
        rate_limits_from_headers: bool = False,
        circuit_breaker_threshold: Optional[int] = ...,  # 10
        circuit_breaker_cooldown: float = 10.0,
        initial_retry_delay: float = 0.5,
        max_tokens_per_input: int = 8192,
        max_tokens_per_request: int = 300_000,
    ) -> EmbeddingConfig: ...
    @staticmethod
    def local(
        model: Union[str, Callable[[list[str]], Any]],
        *,
        name: Optional[str] = None,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        max_queue: Optional[int] = ...,  # 1024
        batching: bool = True,
        max_batch_size: int = 256,
        max_concurrency: int = 16,
    ) -> EmbeddingConfig: ...
    @property
    def provider(self) -> Literal["openai", "local"]: ...
    @property
    def model(self) -> str: ...
    @property
    def base_url(self) -> Optional[str]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class EmbeddingClient:
    """An embedding client; share one between threads (it is thread-safe and pools connections)."""

    def __new__(cls, config: EmbeddingConfig) -> EmbeddingClient: ...
    @property
    def config(self) -> EmbeddingConfig: ...
    @overload
    def embed(self, text: str, *, numpy: Literal[False] = False) -> _Vector: ...
    @overload
    def embed(self, text: str, *, numpy: Literal[True]) -> npt.NDArray[np.float32]: ...
    @overload
    def embed_many(self, texts: Sequence[str], *, numpy: Literal[False] = False) -> _Matrix: ...
    @overload
    def embed_many(self, texts: Sequence[str], *, numpy: Literal[True]) -> npt.NDArray[np.float32]: ...
    def embed_batch_parallel(
        self,
        texts_batch: Sequence[Sequence[str]],
        max_concurrency: Optional[int] = None,
        timeout_ms: Optional[float] = None,
        *,
        numpy: bool = False,
        progress: Optional[Callable[[int], object]] = None,
    ) -> _BatchResult: ...
    @overload
    def aembed(self, text: str, *, numpy: Literal[False] = False) -> Awaitable[_Vector]: ...
    @overload
    def aembed(self, text: str, *, numpy: Literal[True]) -> Awaitable[npt.NDArray[np.float32]]: ...
    @overload
    def aembed_many(self, texts: Sequence[str], *, numpy: Literal[False] = False) -> Awaitable[_Matrix]: ...
    @overload
    def aembed_many(
        self, texts: Sequence[str], *, numpy: Literal[True]
    ) -> Awaitable[npt.NDArray[np.float32]]: ...
    def aembed_batch_parallel(
        self,
        texts_batch: Sequence[Sequence[str]],
        max_concurrency: Optional[int] = None,
        timeout_ms: Optional[float] = None,
        *,
        numpy: bool = False,
    ) -> Awaitable[_BatchResult]: ...
    def stats(self) -> dict[str, Any]: ...

@final
class EmbeddingService:
    """An OpenAI-compatible embeddings server (Rust, axum) for a Python embedding callable."""

    def __new__(
        cls,
        model: Union[str, Callable[[list[str]], Any]],
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        name: Optional[str] = None,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        max_queue: Optional[int] = ...,  # 1024
        batching: bool = True,
        max_inputs_per_request: int = 2048,
        max_tokens_per_input: int = 8192,
        max_tokens_per_request: int = 300000,
        fair_share_tokens: Optional[int] = ...,  # 1024
        max_body_bytes: int = ...,  # 16 MiB
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        idle_timeout: float = 5.0,
        max_connections: int = 1024,
    ) -> EmbeddingService: ...
    @property
    def url(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def model(self) -> str: ...
    @property
    def running(self) -> bool: ...
    def stats(self) -> dict[str, Any]: ...
    def serve_forever(self) -> None: ...
    def stop(self) -> None: ...
    def __enter__(self) -> EmbeddingService: ...
    def __exit__(self, exc: object, value: object, tb: object) -> None: ...

@final
class FaultServer:
    """A fault-injecting OpenAI-compatible embeddings server on 127.0.0.1 (see gilkit_embed.testing)."""

    def __new__(
        cls,
        *,
        dim: int = 8,
        latency: float = 0.0,
        retry_after: str = "0.01",
        timeout_sleep: float = 5.0,
        worker_threads: int = 1,
    ) -> FaultServer: ...
    @property
    def base_url(self) -> str: ...
    @property
    def requests(self) -> int: ...
    @property
    def connections(self) -> int: ...
    @property
    def max_in_flight(self) -> int: ...
    def attempts(self, first_input: str) -> int: ...
    def set_latency(self, latency: float) -> None: ...
    def reset(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> FaultServer: ...
    def __exit__(self, exc: object, value: object, tb: object) -> None: ...

def expected_embedding(text: str, dim: int = 8) -> list[float]: ...
def system_info() -> dict[str, Any]: ...
def configure_runtime(
    *,
    worker_threads: Optional[int] = None,
    max_blocking_threads: Optional[int] = None,
    thread_stack_size: Optional[int] = None,
    thread_name: Optional[str] = None,
) -> None: ...
def runtime_info() -> dict[str, Any]: ...
