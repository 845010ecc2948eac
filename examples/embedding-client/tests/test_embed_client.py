"""The client against the fault-injecting loopback server: results, alignment, every fault's
retry or exception, input validation, threads, asyncio, numpy, GIL release and Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from gil_probe import assert_holds_gil, assert_releases_gil
from stats_schema import LATENCY, assert_schema

import gilkit_embed
from gilkit_embed import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    CircuitOpenError,
    EmbeddingClient,
    EmbeddingConfig,
    RateLimitError,
)
from gilkit_embed.testing import FaultServer, expected_embedding


def texts(n: int, prefix: str = "text") -> list[str]:
    return [f"{prefix} {i}" for i in range(n)]


def assert_aligned(inputs: list[str], vectors) -> None:
    assert len(vectors) == len(inputs)
    for text, vector in zip(inputs, vectors):
        assert list(vector) == pytest.approx(expected_embedding(text)), text


def test_embed_and_embed_many_return_each_texts_vector(make_client):
    client = make_client()
    assert client.embed("hello") == pytest.approx(expected_embedding("hello"))
    inputs = texts(50)
    assert_aligned(inputs, client.embed_many(inputs))
    assert_aligned(inputs, client.embed_many(tuple(inputs)))
    assert_aligned(inputs, client.embed_many(t for t in inputs))


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_both_encodings(make_client, encoding):
    client = make_client(encoding_format=encoding)
    inputs = texts(3)
    assert_aligned(inputs, client.embed_many(inputs))


def test_split_requests_stay_in_order(make_client, fault_server):
    client = make_client(max_batch_size=10, max_concurrency=8)
    inputs = texts(500)
    inputs[0] = "@slow=100 first request answers last"
    before = fault_server.requests
    assert_aligned(inputs, client.embed_many(inputs))
    assert fault_server.requests - before == 50


def test_dimensions_are_sent(make_client):
    client = make_client(dimensions=4)
    assert client.embed("short") == pytest.approx(expected_embedding("short", 4))
    assert client.config.to_dict()["dimensions"] == 4


def test_numpy_output(make_client):
    client = make_client()
    inputs = texts(4)
    array = client.embed_many(inputs, numpy=True)
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.float32 and array.shape == (4, 8)
    assert_aligned(inputs, array)
    one = client.embed("x", numpy=True)
    assert one.shape == (8,) and one.dtype == np.float32


def timeout_for(first: str) -> float:
    """The client timeout for a fault case. Where the server never answers, a short one keeps the
    test quick, and it fires however fast the machine is. Everywhere else a request that is
    answered must never time out, so the timeout is far above any local round trip (the
    "@timeout*1" recovery's second attempt is answered: 2 s is its margin, below the server's
    5 s `timeout_sleep` that its first attempt must run into)."""
    if "@timeout*" in first:
        return 2.0
    return 0.3 if first.startswith("@timeout") else 60.0


# (first input, expected exception, attempts the server sees)
FAULTS = [
    ("@429 always", RateLimitError, 3),
    ("@503 always", APIStatusError, 3),
    ("@500 always", APIStatusError, 3),
    ("@400 bad request", APIStatusError, 1),
    ("@401 bad key", APIStatusError, 1),
    ("@noretry server says no", APIStatusError, 1),
    ("@malformed body", APIResponseValidationError, 1),
    ("@wrongcount body", APIResponseValidationError, 1),
    ("@truncated body", APIConnectionError, 3),
    ("@timeout forever", APITimeoutError, 3),
]


@pytest.mark.parametrize("first, exception, attempts", FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_ends_in_the_right_exception(make_client, fault_server, first, exception, attempts):
    client = make_client(timeout=timeout_for(first))
    with pytest.raises(exception) as info:
        client.embed_many([first, "second text"])
    err = info.value
    assert fault_server.attempts(first) == attempts
    assert err.attempts == attempts
    if isinstance(err, APIStatusError):
        assert err.status_code == int(first[1:4]) if first[1:4].isdigit() else 503
        assert err.request_id and err.request_id.startswith("req_")
        assert err.api_message
    if exception is APIConnectionError:
        assert not isinstance(err, APITimeoutError)


RECOVERIES = [
    ("@429*2 twice", 3),
    ("@500*1 once", 2),
    ("@502*2 twice", 3),
    ("@408*1 once", 2),
    ("@409*1 once", 2),
    ("@retry400*1 once", 2),
    ("@truncated*1 once", 2),
    ("@timeout*1 once", 2),
]


@pytest.mark.parametrize("first, attempts", RECOVERIES, ids=[r[0] for r in RECOVERIES])
def test_transient_faults_are_retried_and_results_stay_aligned(make_client, fault_server, first, attempts):
    client = make_client(timeout=timeout_for(first))
    inputs = [first, "second", "third"]
    assert_aligned(inputs, client.embed_many(inputs))
    assert fault_server.attempts(first) == attempts


def test_retry_after_is_honoured():
    with FaultServer(retry_after="0.8") as server:
        client = EmbeddingClient(
            EmbeddingConfig.openai(api_key="k", base_url=server.base_url, max_retries=1, initial_retry_delay=0.01)
        )
        import time

        t0 = time.monotonic()
        client.embed("@429*1 x")
        # Our backoff would wait 10 ms; the server asked for 800 ms.
        assert time.monotonic() - t0 >= 0.8


def test_embed_batch_parallel_keeps_one_slot_per_batch(make_client):
    client = make_client()
    batches = [texts(3, f"batch {b}") for b in range(12)]
    batches[2][0] = "@500 batch 2 fails"
    batches[7][0] = "@malformed batch 7 fails"
    batches[5][0] = "@slow=80 batch 5 is slow"
    out = client.embed_batch_parallel(batches, max_concurrency=4)
    assert set(out) == {"embeddings", "errors", "stats", "duration_s"}
    assert type(out["duration_s"]) is float
    assert len(out["embeddings"]) == len(out["errors"]) == 12
    for b, (batch, vectors, error) in enumerate(zip(batches, out["embeddings"], out["errors"])):
        if b in (2, 7):
            assert vectors is None
            assert isinstance(error, APIStatusError if b == 2 else APIResponseValidationError)
        else:
            assert error is None
            assert_aligned(batch, vectors)
    assert out["stats"]["successful_batches"] == 10
    assert out["stats"]["failed_batches"] == 2
    assert out["stats"]["total_embeddings"] == 30
    assert out["duration_s"] > 0
    assert_schema(
        out["stats"],
        {
            "total_batches": int,
            "successful_batches": int,
            "failed_batches": int,
            "total_embeddings": int,
            "prompt_tokens": int,
            "latency": dict,
        },
    )
    assert_schema(out["stats"]["latency"], LATENCY)
    assert out["stats"]["latency"]["count"] == 12


def test_embed_batch_parallel_timeout_and_numpy(make_client):
    client = make_client()
    out = client.embed_batch_parallel([["fast"], ["@slow=3000 slow"], ["also fast"]], timeout_ms=300, numpy=True)
    assert isinstance(out["errors"][1], APITimeoutError)
    assert out["embeddings"][1] is None
    assert out["embeddings"][0].shape == (1, 8)
    assert_aligned(["also fast"], out["embeddings"][2])


def test_embed_batch_parallel_reports_progress(make_client):
    client = make_client()
    seen: list[int] = []
    out = client.embed_batch_parallel(
        [[f"@slow=30 progress {i}"] for i in range(20)], max_concurrency=4, progress=seen.append
    )
    assert out["stats"]["successful_batches"] == 20
    assert sum(seen) == 20 and all(n > 0 for n in seen)
    assert out["stats"]["latency"]["p50_s"] >= 0.030
    with pytest.raises(TypeError, match="progress must be callable"):
        client.embed_batch_parallel([["x"]], progress=3)


@pytest.mark.parametrize(
    "call, exception, message",
    [
        (lambda c: c.embed_many([]), ValueError, "no texts"),
        (lambda c: c.embed_many(["ok", ""]), ValueError, "index 1 is empty"),
        (lambda c: c.embed(""), ValueError, "empty"),
        (lambda c: c.embed_many(["x" * 40_000]), ValueError, "too long"),
        (lambda c: c.embed_many("abc"), TypeError, "not a single str"),
        (lambda c: c.embed_many([b"abc"]), TypeError, "texts[0] must be str, got bytes"),
        (lambda c: c.embed_many(["a", None]), TypeError, "texts[1] must be str, got NoneType"),
        (lambda c: c.embed(42), TypeError, "must be str"),
        (lambda c: c.embed_many(5), TypeError, "list of strings"),
        (lambda c: c.embed_batch_parallel([["a"], []]), ValueError, "batch 1 is empty"),
        (lambda c: c.embed_batch_parallel([["a"], [1]]), TypeError, "texts_batch[1][0] must be str"),
        (lambda c: c.embed_batch_parallel([["a"]], max_concurrency=0), ValueError, "max_concurrency"),
    ],
)
def test_bad_input_raises_before_any_request(make_client, fault_server, call, exception, message):
    client = make_client()
    before = fault_server.requests
    with pytest.raises(exception, match=None) as info:
        call(client)
    assert message in str(info.value)
    assert fault_server.requests == before


def test_bad_config_raises_value_error(monkeypatch):
    with pytest.raises(ValueError, match="encoding_format"):
        EmbeddingConfig.openai(api_key="k", encoding_format="hex")
    with pytest.raises(ValueError, match="base_url"):
        EmbeddingConfig.openai(api_key="k", base_url="localhost:8000")
    with pytest.raises(ValueError, match="timeout"):
        EmbeddingConfig.openai(api_key="k", timeout=0)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        EmbeddingConfig.openai()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    config = EmbeddingConfig.openai()
    assert config.to_dict()["api_key_set"] is True
    assert "sk-from-env" not in repr(config)
    with pytest.raises(TypeError, match="EmbeddingConfig"):
        EmbeddingClient("not a config")  # type: ignore[arg-type]


def test_circuit_breaker_opens_and_says_so(make_client, fault_server):
    client = make_client(max_retries=0, circuit_breaker_threshold=3, circuit_breaker_cooldown=60)
    for _ in range(3):
        with pytest.raises(APIStatusError):
            client.embed("@500 breaker")
    before = fault_server.requests
    with pytest.raises(CircuitOpenError, match="circuit breaker open after 3 consecutive failures") as info:
        client.embed("fine text")
    assert info.value.retry_in > 0
    assert fault_server.requests == before
    assert client.stats()["circuit_open"] is True


def test_connection_refused():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = EmbeddingClient(
        EmbeddingConfig.openai(api_key="k", base_url=f"http://127.0.0.1:{port}/v1", initial_retry_delay=0.01)
    )
    with pytest.raises(APIConnectionError, match="could not reach"):
        client.embed("x")


def test_many_threads_share_one_pool(make_client, fault_server):
    client = make_client(max_concurrency=8)
    fault_server.reset()
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            inputs = texts(20, f"@slow=5 thread {t}")
            results[t] = [client.embed(x) for x in inputs]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for t in range(16):
        assert_aligned(texts(20, f"@slow=5 thread {t}"), results[t])
    assert fault_server.requests == 320
    # Reused: a connection returns to the pool a moment after its response is read, so a burst can
    # open a few more than max_concurrency, but nowhere near one per request.
    assert fault_server.connections <= 16
    assert fault_server.max_in_flight > 1


def test_asyncio_variants(make_client):
    client = make_client()

    async def main():
        one, many, batches = await asyncio.gather(
            client.aembed("a"),
            client.aembed_many(texts(5)),
            client.aembed_batch_parallel([["b"], ["@400 bad"]]),
        )
        with pytest.raises(RateLimitError):
            await client.aembed("@429 async")
        arr = await client.aembed_many(texts(2), numpy=True)
        return one, many, batches, arr

    one, many, batches, arr = asyncio.run(main())
    assert one == pytest.approx(expected_embedding("a"))
    assert_aligned(texts(5), many)
    assert batches["embeddings"][1] is None and isinstance(batches["errors"][1], APIStatusError)
    assert arr.shape == (2, 8)


def test_asyncio_loop_keeps_running_while_waiting(make_client):
    client = make_client()

    async def main() -> int:
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await client.aembed("@slow=200 slow")
        done = True
        await task
        return ticks

    assert asyncio.run(main()) > 5


def test_asyncio_cancellation_abandons_the_request(make_client, fault_server):
    client = make_client()

    async def main():
        task = asyncio.ensure_future(client.aembed("@slow=2000 cancelled"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert fault_server.attempts("@slow=2000 cancelled") == 1


def test_a_methods_need_a_running_loop(make_client):
    with pytest.raises(RuntimeError, match="running asyncio event loop"):
        make_client().aembed("x")


def test_calls_release_the_gil(make_client):
    client = make_client()
    assert_releases_gil(lambda: client.embed("@slow=150 gil"))
    assert_releases_gil(lambda: client.embed_many(["@slow=150 gil many", "b"]))
    assert_releases_gil(lambda: client.embed_batch_parallel([["@slow=150 gil batch"], ["c"]]))
    # Control: the probe does see a call that holds the GIL.
    assert_holds_gil(lambda: sum(range(3_000_000)))


@pytest.mark.parametrize(
    "call", ['client.embed("@timeout hang")', 'client.embed_batch_parallel([["ok"], ["@timeout hang"]])']
)
def test_ctrl_c_interrupts_a_waiting_call(call):
    code = textwrap.dedent(
        f"""
        import sys
        from gilkit_embed import EmbeddingClient, EmbeddingConfig
        from gilkit_embed.testing import FaultServer
        server = FaultServer(timeout_sleep=30)
        client = EmbeddingClient(EmbeddingConfig.openai(api_key="k", base_url=server.base_url, timeout=60))
        print("ready", flush=True)
        try:
            {call}
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    import time

    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert "interrupted" in out


def test_system_info_and_runtime_config():
    info = gilkit_embed.system_info()
    assert info["version"] == gilkit_embed.__version__
    assert info["cpu_count"] >= 1
    runtime = gilkit_embed.runtime_info()
    assert "worker_threads" in runtime
    with pytest.raises(RuntimeError):
        gilkit_embed.configure_runtime(worker_threads=2)  # already started by the tests above


def test_stats_count_attempts_and_retries(make_client):
    client = make_client()
    client.embed("@500*1 stats")
    s = client.stats()
    assert s["attempts"] == 2 and s["retries"] == 1 and s["succeeded_requests"] == 1
    assert_schema(
        s,
        {
            "model": str,
            "attempts": int,
            "retries": int,
            "succeeded_requests": int,
            "failed_requests": int,
            "prompt_tokens": int,
            "rate_limited_s": float,
            "circuit_open": bool,
        },
    )


def test_env_is_untouched():
    assert "gilkit" not in os.environ.get("OPENAI_BASE_URL", "")
