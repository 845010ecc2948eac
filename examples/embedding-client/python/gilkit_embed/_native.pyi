"""Type stubs of the native module (Rust, PyO3)."""

from typing import Any, Awaitable, Callable, Literal, Optional, Sequence, TypedDict, Union, overload

import numpy as np
import numpy.typing as npt

from .errors import EmbeddingError

Vector = list[float]
Matrix = list[list[float]]

class BatchStats(TypedDict):
    total_batches: int
    successful_batches: int
    failed_batches: int
    total_embeddings: int
    prompt_tokens: int
    avg_batch_latency_ms: float

class BatchResult(TypedDict):
    embeddings: list[Optional[Union[Matrix, npt.NDArray[np.float32]]]]
    errors: list[Optional[EmbeddingError]]
    stats: BatchStats
    duration_ms: float

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
        circuit_breaker_threshold: Optional[int] = 10,
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
        max_wait_ms: float = 2.0,
        max_queue: Optional[int] = 1024,
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

class EmbeddingClient:
    """An embedding client; share one between threads (it is thread-safe and pools connections)."""

    def __init__(self, config: EmbeddingConfig) -> None: ...
    @property
    def config(self) -> EmbeddingConfig: ...
    @overload
    def embed(self, text: str, *, numpy: Literal[False] = False) -> Vector: ...
    @overload
    def embed(self, text: str, *, numpy: Literal[True]) -> npt.NDArray[np.float32]: ...
    @overload
    def embed_many(self, texts: Sequence[str], *, numpy: Literal[False] = False) -> Matrix: ...
    @overload
    def embed_many(self, texts: Sequence[str], *, numpy: Literal[True]) -> npt.NDArray[np.float32]: ...
    def embed_batch_parallel(
        self,
        texts_batch: Sequence[Sequence[str]],
        max_concurrency: Optional[int] = None,
        timeout_ms: Optional[float] = None,
        *,
        numpy: bool = False,
    ) -> BatchResult: ...
    @overload
    def aembed(self, text: str, *, numpy: Literal[False] = False) -> Awaitable[Vector]: ...
    @overload
    def aembed(self, text: str, *, numpy: Literal[True]) -> Awaitable[npt.NDArray[np.float32]]: ...
    @overload
    def aembed_many(self, texts: Sequence[str], *, numpy: Literal[False] = False) -> Awaitable[Matrix]: ...
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
    ) -> Awaitable[BatchResult]: ...
    def stats(self) -> dict[str, Any]: ...

class FaultServer:
    """A fault-injecting OpenAI-compatible embeddings server on 127.0.0.1 (see gilkit_embed.testing)."""

    def __init__(
        self,
        *,
        dim: int = 8,
        latency: float = 0.0,
        retry_after: str = "0.01",
        timeout_sleep: float = 5.0,
        worker_threads: int = 1,
    ) -> None: ...
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
