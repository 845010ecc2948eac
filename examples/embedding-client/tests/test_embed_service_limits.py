"""The service under attack, over real sockets on 127.0.0.1: idle and half-sent connections are
closed (header, body and idle timeouts), the connection bound holds, oversized bodies and inputs are
refused before they are read or embedded, unknown models get 404, every error body is OpenAI-shaped,
a large request cannot make a small one wait for all of it (fair shares), and /metrics and
/openapi.json describe the service.

No test asserts on elapsed time: timeouts in the tests are hang guards only; ordering is made
deterministic with a model that waits for the test's signal."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator

import numpy as np
import pytest

import embed_fake_models as fake_models
from gilkit_embed import EmbeddingService

GUARD = 30.0  # seconds: only a hang guard, never a verdict


def post(url: str, body: object, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url + "/embeddings", data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=GUARD) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=GUARD) as r:
            return r.status, r.read(), r.headers["content-type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers["content-type"]


def assert_openai_error(payload: dict[str, Any], code: str | None = None) -> dict[str, Any]:
    """The body is exactly OpenAI's error shape; returns its `error` object."""
    assert set(payload) == {"error"}, payload
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] in {"invalid_request_error", "server_error"}
    if code is not None:
        assert err["code"] == code, err
    return err


def connect(svc: EmbeddingService) -> socket.socket:
    s = socket.create_connection((svc.host, svc.port), timeout=GUARD)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return status, headers, body


@pytest.fixture
def service() -> Iterator[Callable[..., EmbeddingService]]:
    started: list[EmbeddingService] = []

    def start(model: Any = fake_models.exact, **options: Any) -> EmbeddingService:
        svc = EmbeddingService(model, port=0, name="fake", **options)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


def test_idle_keep_alive_connection_is_closed(service):
    svc = service(idle_timeout=0.3, header_timeout=GUARD)
    s = connect(svc)
    body = json.dumps({"input": "hello"}).encode()
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    status, _, _ = read_response(s)
    assert status == 200
    # Then nothing more is sent: the server closes the kept-alive connection by itself.
    assert read_until_closed(s) == b""
    # And a connection that never sends anything is closed too.
    assert read_until_closed(connect(svc)) == b""


def test_half_sent_headers_are_cut_off_by_the_header_timeout(service):
    svc = service(header_timeout=0.5, idle_timeout=GUARD)
    s = connect(svc)
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    stop = threading.Event()

    def dribble() -> None:
        # One byte every 20 ms: never idle, never a complete head (slowloris).
        while not stop.is_set():
            try:
                s.send(b"a")
            except OSError:
                return
            time.sleep(0.02)

    t = threading.Thread(target=dribble, daemon=True)
    t.start()
    try:
        got = read_until_closed(s)
    finally:
        stop.set()
        t.join(GUARD)
    assert b"200 OK" not in got


def test_a_body_that_never_arrives_gets_408(service):
    svc = service(body_timeout=0.3, idle_timeout=GUARD, header_timeout=GUARD)
    s = connect(svc)
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100\r\n\r\n{\"input\": ")
    status, headers, body = read_response(s)
    assert status == 408
    assert headers["content-type"] == "application/json"
    assert_openai_error(json.loads(body), "request_timeout")
    assert read_until_closed(s) == b""


def test_content_length_over_the_limit_is_refused_before_the_body(service):
    svc = service(max_body_bytes=1000)
    s = connect(svc)
    # Only the head: a 413 must come back without the server waiting for 99,999,999,999 bytes.
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 99999999999\r\n\r\n")
    status, headers, body = read_response(s)
    assert status == 413
    assert headers["content-type"] == "application/json"
    err = assert_openai_error(json.loads(body), "request_too_large")
    assert "99999999999 bytes" in err["message"] and "1000 bytes" in err["message"]


def test_chunked_body_over_the_limit_gets_json_413(service):
    svc = service(max_body_bytes=1000)
    s = connect(svc)
    chunk = b"x" * 600
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2 + b"0\r\n\r\n")
    status, _, body = read_response(s)
    assert status == 413
    assert_openai_error(json.loads(body), "request_too_large")


def test_connection_bound_holds_and_frees_up(service):
    svc = service(max_connections=2, idle_timeout=GUARD, header_timeout=GUARD)
    idle = [connect(svc), connect(svc)]
    deadline = time.monotonic() + GUARD
    while svc.stats()["open_connections"] < 2:
        assert time.monotonic() < deadline, "the two connections were never accepted"
        time.sleep(0.01)
    waiting = connect(svc)  # completes in the kernel's backlog, but is not accepted
    body = json.dumps({"input": "third"}).encode()
    waiting.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    for _ in range(20):
        assert svc.stats()["open_connections"] <= 2
        time.sleep(0.01)
    idle[0].close()
    status, _, _ = read_response(waiting)
    assert status == 200
    assert svc.stats()["open_connections"] <= 2


class Recorder:
    """Records every list of texts it is called with; answers like `fake_models.exact`."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.calls.append(list(texts))
        return fake_models.exact(texts)


def test_inputs_over_the_token_limits_are_refused_before_the_model(service):
    model = Recorder()
    svc = service(model, max_tokens_per_input=100, max_tokens_per_request=250)
    status, payload = post(svc.url, {"input": ["short", "word " * 200]})
    assert status == 400
    err = assert_openai_error(payload, "context_length_exceeded")
    assert err["param"] == "input" and "input[1]" in err["message"] and "100 tokens" in err["message"]
    status, payload = post(svc.url, {"input": ["x" * 270] * 3})  # 90 tokens each, 270 in all
    assert status == 400
    assert "250" in assert_openai_error(payload, "invalid_request")["message"]
    assert model.calls == []
    status, _ = post(svc.url, {"input": ["x" * 270] * 2})
    assert status == 200 and len(model.calls) >= 1


def test_unknown_model_is_404_model_not_found(service):
    svc = service()
    status, payload = post(svc.url, {"input": "hi", "model": "gpt-99"})
    assert status == 404
    err = assert_openai_error(payload, "model_not_found")
    assert err["param"] == "model" and "gpt-99" in err["message"] and "fake" in err["message"]
    assert post(svc.url, {"input": "hi", "model": "fake"})[0] == 200
    assert post(svc.url, {"input": "hi"})[0] == 200  # no model named: the one served


@pytest.mark.parametrize(
    "raw, needle",
    [
        (b'{"input": "\\ud800"}', "surrogate"),
        (b'{"input": ', "not a valid JSON request"),
        (b"\xff\xfe", "not a valid JSON request"),
        (b'{"input": "a", "user": 5}', "not a valid JSON request"),
        (b'{"input": "a", "dimensions": -1}', "not a valid JSON request"),
    ],
)
def test_malformed_bodies_get_openai_errors(service, raw, needle):
    svc = service()
    status, payload = post(svc.url, None, raw=raw)
    assert status == 400
    assert needle in assert_openai_error(payload, "invalid_request")["message"]


def test_unknown_routes_and_methods_get_openai_errors(service):
    svc = service()
    status, body, ctype = get(f"http://{svc.host}:{svc.port}/nope")
    assert status == 404 and ctype == "application/json"
    assert_openai_error(json.loads(body), "not_found")
    status, body, ctype = get(svc.url + "/embeddings")
    assert status == 405 and ctype == "application/json"
    assert_openai_error(json.loads(body), "method_not_allowed")


class Gated:
    """A model whose first call waits until the test opens the gate; records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(GUARD)
        return fake_models.exact(texts)


@pytest.mark.parametrize("fair", [True, False])
def test_a_small_request_does_not_wait_for_all_of_a_large_one(service, fair):
    model = Gated()
    # 40 texts of 100 estimated tokens; shares of 300 tokens are 3 texts.
    svc = service(model, fair_share_tokens=300 if fair else None, max_batch=4)
    large = [f"{i:03d}" + "x" * 297 for i in range(40)]
    results: dict[str, int] = {}
    big = threading.Thread(target=lambda: results.update(large=post(svc.url, {"input": large})[0]))
    big.start()
    assert model.entered.wait(GUARD)
    small = threading.Thread(target=lambda: results.update(small=post(svc.url, {"input": ["small one"]})[0]))
    small.start()
    # Wait until the small request's text is in the model's queue, then let the model go on.
    deadline = time.monotonic() + GUARD
    while svc.stats()["batcher"]["submitted"] < (3 if fair else 40) + 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    model.gate.set()
    big.join(GUARD)
    small.join(GUARD)
    assert results == {"large": 200, "small": 200}
    small_call = next(i for i, c in enumerate(model.calls) if "small one" in c)
    last_large_call = max(i for i, c in enumerate(model.calls) if large[-1] in c)
    if fair:
        # The small request overtook the rest of the large one.
        assert small_call < last_large_call, model.calls
    else:
        # Without fair shares it waited for every text of the large one.
        assert small_call >= last_large_call, model.calls


def test_metrics_and_openapi(service):
    svc = service()
    assert post(svc.url, {"input": ["a", "b"]})[0] == 200
    assert post(svc.url, {"input": "c", "model": "gpt-99"})[0] == 404
    status, body, ctype = get(f"http://{svc.host}:{svc.port}/metrics")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    text = body.decode()
    for line in [
        'gilkit_embed_requests_total{route="/v1/embeddings",status="200"} 1',
        'gilkit_embed_requests_total{route="/v1/embeddings",status="404"} 1',
        "gilkit_embed_inputs_total 2",
        "gilkit_embed_queue_depth 0",
        "gilkit_embed_batch_size_count 1",
        "gilkit_embed_model_duration_seconds_count 1",
        "gilkit_embed_request_duration_seconds_count 2",
    ]:
        assert line in text, (line, text)
    assert "gilkit_embed_prompt_tokens_total" in text and "gilkit_embed_connections_open" in text
    status, body, ctype = get(f"http://{svc.host}:{svc.port}/openapi.json")
    assert status == 200 and ctype == "application/json"
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {"/v1/embeddings", "/v1/models", "/health", "/metrics", "/openapi.json"}
    request = doc["components"]["schemas"]["EmbeddingRequest"]["properties"]
    assert request["model"]["enum"] == ["fake", None]
    assert set(doc["paths"]["/v1/embeddings"]["post"]["responses"]) >= {"200", "400", "404", "408", "413", "503"}


def test_bad_service_arguments_name_the_argument():
    for kwargs, needle in [
        ({"max_batch": -1}, "max_batch must be an integer >= 1, got -1"),
        ({"max_connections": 0}, "max_connections must be an integer >= 1, got 0"),
        ({"idle_timeout": -2}, "idle_timeout must be a positive number of seconds, got -2"),
        ({"port": 70000}, "port must be from 0 to 65535, got 70000"),
        ({"fair_share_tokens": 0}, "fair_share_tokens must be an integer >= 1, got 0"),
    ]:
        with pytest.raises(ValueError) as info:
            EmbeddingService(fake_models.exact, **kwargs)
        assert needle in str(info.value)


def test_the_reported_megabyte_input_is_refused_with_the_defaults(service):
    # Issue 17's case: "word " * 200000 (1 MB) used to hold the model for minutes.
    model = Recorder()
    svc = service(model)
    status, payload = post(svc.url, {"input": "word " * 200_000})
    assert status == 400
    assert "8192 tokens per input" in assert_openai_error(payload, "context_length_exceeded")["message"]
    assert model.calls == []
    assert post(svc.url, {"input": "word"})[0] == 200
