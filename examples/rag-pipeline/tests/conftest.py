"""Shared fixtures of the gilkit_rag suite (test doubles live in rag_fakes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rag_fakes import CORPUS


@pytest.fixture
def corpus() -> Path:
    return CORPUS / "docs"


@pytest.fixture
def known_queries() -> list[dict[str, str]]:
    return json.loads((CORPUS / "queries.json").read_text(encoding="utf-8"))
