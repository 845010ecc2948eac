"""How gilkit_rag's objects are rebuilt from a pickle (by ``pickle``, ``copy``, multiprocessing and
Ray). Kept apart so that ``__reduce__`` methods, Rust or Python, name one stable function each."""

from __future__ import annotations

from typing import Any


def restore_openai_embedder(
    model: str, base_url: str | None, api_key: str, dimensions: int | None, timeout: float, max_retries: int
) -> Any:
    """An ``OpenAIEmbedder`` with the pickled settings (keyword-only ones passed by name)."""
    from . import OpenAIEmbedder

    return OpenAIEmbedder(
        model, base_url=base_url, api_key=api_key, dimensions=dimensions, timeout=timeout, max_retries=max_retries
    )
