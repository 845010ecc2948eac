"""Typed stub of the Rust extension behind gilkit_rag (see gilkit_rag.ParallelRAG for the documented API)."""

from os import PathLike
from typing import Any, Callable, Sequence, final

from typing_extensions import Self

__all__ = [
    "Database",
    "OpenAIEmbedder",
    "InProcessEmbedder",
    "load_and_split",
    "load_and_split_many",
    "StagedWriter",
    "build_shard",
    "RagError",
    "DatabaseLockedError",
    "CorruptDatabaseError",
    "ModelMismatchError",
    "DatabaseNotFoundError",
    "NotADatabaseError",
    "EmbeddingError",
    "check_database",
    "repair_database",
    "set_pdfium_library",
    "set_pdf_engine",
    "pdf_engine",
]

class RagError(Exception): ...
class DatabaseLockedError(RagError): ...
class CorruptDatabaseError(RagError): ...
class ModelMismatchError(RagError): ...
class DatabaseNotFoundError(RagError): ...
class EmbeddingError(RagError): ...
class NotADatabaseError(RagError): ...

@final
class OpenAIEmbedder:
    """Any OpenAI-compatible ``/v1/embeddings`` endpoint, embedded from Rust (gilkit-embed).

    ``api_key`` defaults to ``$OPENAI_API_KEY`` (a placeholder for local servers that need none),
    ``base_url`` to ``$OPENAI_BASE_URL`` (else OpenAI's). Retries 408/409/429/5xx like the official
    client (``max_retries``). Both methods release the GIL; they raise ``EmbeddingError``.
    """

    def __new__(
        cls,
        model: str = "text-embedding-3-small",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        dimensions: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> Self: ...
    @property
    def model_id(self) -> str: ...
    def embed_passages(self, texts: list[str]) -> list[list[float]]: ...
    def embed_query(self, text: str) -> list[float]: ...
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]: ...

@final
class InProcessEmbedder:
    """A Python model embedded in-process through gilkit-embed: ``passages`` and ``query`` take a
    list of strings and return one vector per string; each is called by its own ``GilBatcher``
    worker thread, with up to 64 texts per call (a call that raises is repeated text by text)."""

    def __new__(
        cls, model_id: str, passages: Callable[[list[str]], Any], query: Callable[[list[str]], Any]
    ) -> Self: ...
    @property
    def model_id(self) -> str: ...

@final
class Database:
    def __new__(
        cls, db_dir: str | PathLike[str], embedder: OpenAIEmbedder | InProcessEmbedder, max_workers: int | None = None
    ) -> Self: ...
    @property
    def db_dir(self) -> str: ...
    def ingest(
        self,
        paths: Sequence[str | PathLike[str]],
        *,
        include: Sequence[str] = ...,
        exclude: Sequence[str] = ...,
        splitter: str = "recursive",
        chunk_size: int = 800,
        chunk_overlap: int = 100,
        embed_batch: int = 32,
        embed_concurrency: int = 1,
        retries: int = 2,
        retry_backoff: float = 0.2,
        commit_every: int = 256,
        prune: bool = True,
        max_file_bytes: int = ...,
        max_decompressed_bytes: int = ...,
        max_text_bytes: int = ...,
        max_chunks_per_document: int = ...,
        progress: Callable[[int, int, int, int], Any] | None = None,
    ) -> dict[str, Any]: ...
    def query(self, text: str, k: int = 5) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]: ...

def set_pdfium_library(path: str | PathLike[str] | None, reason: str | None = None) -> None: ...
def set_pdf_engine(engine: str) -> None: ...
def pdf_engine() -> tuple[str, str | None, str | None]: ...
def load_and_split(
    path: str | PathLike[str], splitter: str = "recursive", chunk_size: int = 800, chunk_overlap: int = 100
) -> tuple[str, str, list[dict[str, Any]]]: ...
def load_and_split_many(
    paths: Sequence[str | PathLike[str]],
    max_workers: int | None = None,
    splitter: str = "recursive",
    chunk_size: int = 800,
    chunk_overlap: int = 100,
) -> tuple[int, int, int]: ...
def check_database(db_dir: str | PathLike[str]) -> dict[str, Any]: ...
def repair_database(db_dir: str | PathLike[str], model: str | None = None) -> dict[str, Any]: ...

@final
class StagedWriter:
    """The Ray engine's driver-side handle on a database (see ``gilkit_rag.ray_engine``): holds the
    writer's lock until ``close()``; plans the work and commits workers' staged segments."""

    def __new__(cls, db_dir: str | PathLike[str]) -> Self: ...
    def check_model(self, model_id: str) -> None: ...
    def plan(
        self,
        paths: Sequence[str | PathLike[str]],
        *,
        include: Sequence[str] = ...,
        exclude: Sequence[str] = ...,
        prune: bool = True,
    ) -> dict[str, Any]: ...
    def apply(self, touched: Sequence[str], removed: Sequence[str]) -> None: ...
    def commit(self, segments: Sequence[str]) -> list[int]: ...
    def compact(self) -> bool: ...
    def close(self) -> None: ...

def build_shard(
    embedder: OpenAIEmbedder | InProcessEmbedder,
    files: Sequence[str],
    out: str | PathLike[str],
    *,
    splitter: str = "recursive",
    chunk_size: int = 800,
    chunk_overlap: int = 100,
    workers: int | None = None,
    embed_batch: int = 32,
    embed_concurrency: int = 1,
    retries: int = 2,
    retry_backoff: float = 0.2,
    commit_every: int = 256,
    max_file_bytes: int = ...,
    max_decompressed_bytes: int = ...,
    max_text_bytes: int = ...,
    max_chunks_per_document: int = 25_000,
    progress: Callable[[int, int, int, int], Any] | None = None,
) -> dict[str, Any]: ...
