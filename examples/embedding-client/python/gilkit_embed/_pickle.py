"""How an ``EmbeddingConfig`` is rebuilt from a pickle (``pickle``, ``copy``, multiprocessing, Ray):
through the public constructors, so the settings are checked again where they arrive."""

from __future__ import annotations

from typing import Any


def restore_openai(settings: dict[str, Any]) -> Any:
    """``EmbeddingConfig.openai(**settings)``."""
    from . import EmbeddingConfig

    return EmbeddingConfig.openai(**settings)


def restore_local(model: Any, settings: dict[str, Any]) -> Any:
    """``EmbeddingConfig.local(model, **settings)``."""
    from . import EmbeddingConfig

    return EmbeddingConfig.local(model, **settings)
