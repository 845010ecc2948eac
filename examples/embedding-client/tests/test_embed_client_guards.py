"""The client never returns garbage and never hangs on misuse: non-finite or misshapen vectors from
local models and HTTP servers (float and base64) are typed errors naming the input; Ctrl-C in
embed_batch_parallel keeps the finished batches (`partial_results`, aligned); a model that calls its
own client gets a clear error instead of a deadlock; bad arguments get messages that name them."""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import numpy as np
import pytest

import embed_fake_models as fake_models
from gilkit_embed import APIResponseValidationError, EmbeddingClient, EmbeddingConfig, ModelError

GUARD = 60.0  # seconds: hang guards only


def b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


class CannedServer:
    """A loopback /v1/embeddings server answering every request with `make(inputs)` (a JSON text)."""

    def __init__(self, make: Callable[[list[str]], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                out = make(body["input"]).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def canned() -> Iterator[Callable[[Callable[[list[str]], str]], CannedServer]]:
    servers: list[CannedServer] = []

    def start(make: Callable[[list[str]], str]) -> CannedServer:
        servers.append(CannedServer(make))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def response(rows: list[Any]) -> str:
    data = [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)]
    return json.dumps({"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}})


@pytest.mark.parametrize(
    "rows, needle",
    [
        ([b64([1.0, 2.0]), b64([1.0, math.nan])], "input 1 contains NaN or infinity"),
        ([b64([1.0, 2.0]), b64([math.inf, 0.0])], "input 1 contains NaN or infinity"),
        ([[1.0, 2.0], [1e39, 0.0]], "input 1 contains NaN or infinity"),  # overflows float32
        ([[1.0, 2.0], []], "embedding 1 is empty"),
        ([[1.0, 2.0], [1.0]], "embedding 1 has 1 dimensions, but an earlier one has 2"),
    ],
)
def test_http_vectors_must_be_finite_and_rectangular(canned, rows, needle):
    server = canned(lambda inputs: response(rows))
    client = EmbeddingClient(EmbeddingConfig.openai(api_key="", base_url=server.url, max_retries=0))
    with pytest.raises(APIResponseValidationError) as info:
        client.embed_many(["a", "b"])
    assert needle in str(info.value)


def test_http_vectors_must_have_the_dimensions_asked_for(canned):
    server = canned(lambda inputs: response([[0.5] * 4 for _ in inputs]))
    client = EmbeddingClient(EmbeddingConfig.openai(api_key="", base_url=server.url, dimensions=8, max_retries=0))
    with pytest.raises(APIResponseValidationError, match=r"has 4 dimensions, but 8 were asked for \(dimensions=8\)"):
        client.embed("a")
    # The same vectors are fine when no dimension was declared.
    plain = EmbeddingClient(EmbeddingConfig.openai(api_key="", base_url=server.url, max_retries=0))
    assert plain.embed("a") == [0.5] * 4


def test_split_requests_name_the_input_in_the_callers_list(canned):
    def make(inputs: list[str]) -> str:
        return response([b64([math.nan, 0.0] if t == "bad" else [1.0, 0.0]) for t in inputs])

    server = canned(make)
    client = EmbeddingClient(EmbeddingConfig.openai(api_key="", base_url=server.url, max_batch_size=2, max_retries=0))
    with pytest.raises(APIResponseValidationError, match="input 5 contains NaN"):
        client.embed_many(["a", "b", "c", "d", "e", "bad"])


def returns(value: Any) -> Callable[[list[str]], Any]:
    return lambda texts: value


@pytest.mark.parametrize(
    "model, needle",
    [
        (returns(None), "returned a single NoneType for 1 text;"),
        (returns(5.0), "returned a single float for 1 text;"),
        (returns([[math.nan] * 4]), "input 0 contains NaN or infinity"),
        (returns(np.array([[1.0, np.inf]])), "input 0 contains NaN or infinity"),
        (returns([[None, 1.0]]), "input 0 contains NaN or infinity"),
        (returns(np.zeros((2, 3))), "shape [2, 3] for 1 text;"),
    ],
)
def test_local_models_returning_garbage_raise_model_error(model, needle):
    client = EmbeddingClient(EmbeddingConfig.local(model))
    with pytest.raises(ModelError) as info:
        client.embed("x")
    assert needle in str(info.value)


def test_a_nan_among_many_local_texts_names_its_input():
    def model(texts: list[str]) -> np.ndarray:
        out = fake_models.exact(texts)
        out[[i for i, t in enumerate(texts) if t == "bad"]] = np.nan
        return out

    client = EmbeddingClient(EmbeddingConfig.local(model, max_batch_size=3))
    with pytest.raises(ModelError, match="input 4 contains NaN"):
        client.embed_many(["a", "b", "c", "d", "bad"])


def test_a_model_calling_its_own_client_gets_an_error_not_a_deadlock():
    # In a child process, so a regression shows as a killed child, not a hung test run.
    code = """
        from gilkit_embed import EmbeddingClient, EmbeddingConfig, ModelError
        import embed_fake_models as fake

        client = None

        def nested(texts):
            client.embed("inner")  # re-entry: must raise, not wait for itself
            return fake.exact(texts)

        client = EmbeddingClient(EmbeddingConfig.local(nested))
        for call in (lambda: client.embed("outer"), lambda: client.embed_many(["a", "b"])):
            try:
                call()
            except ModelError as e:
                print("REFUSED", e, flush=True)
        out = client.embed_batch_parallel([["x"]])
        print("BATCH", type(out["errors"][0]).__name__, out["errors"][0], flush=True)
        # The client still works afterwards.
        ok = EmbeddingClient(EmbeddingConfig.local(fake.exact))
        print("AFTER", len(ok.embed("fine")), flush=True)
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=GUARD, env=env
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert len(refused) == 2, proc.stdout
    for line in refused:
        assert "RuntimeError" in line and "called its own embedding client" in line
    assert any(line.startswith("BATCH ModelError") and "its own embedding client" in line for line in lines)
    assert "AFTER 8" in lines


def test_ctrl_c_in_embed_batch_parallel_keeps_finished_batches():
    # 25 batches: 20 answer at once, 5 hang. Ctrl-C is sent once the progress callback has seen all
    # 20 finish (the child prints each count), so what has finished is known exactly.
    code = """
        import sys
        from gilkit_embed import EmbeddingClient, EmbeddingConfig
        from gilkit_embed.testing import FaultServer, expected_embedding
        server = FaultServer(timeout_sleep=60)
        client = EmbeddingClient(EmbeddingConfig.openai(api_key="k", base_url=server.base_url, timeout=120))
        batches = [[f"@timeout {i}"] if i % 5 == 4 else [f"doc {i}", f"more {i}"] for i in range(25)]
        done = 0

        def progress(n):
            global done
            done += n
            print("DONE", done, flush=True)

        try:
            client.embed_batch_parallel(batches, max_concurrency=25, progress=progress)
            print("RETURNED", flush=True)
        except KeyboardInterrupt as e:
            partial = e.partial_results
            emb, errs = partial["embeddings"], partial["errors"]
            assert len(emb) == len(errs) == 25
            for i, (v, err) in enumerate(zip(emb, errs)):
                if i % 5 == 4:
                    assert v is None and err is not None, i
                else:
                    assert err is None, (i, err)
                    assert v[1] == expected_embedding(f"more {i}"), i
            print("PARTIAL", partial["stats"]["successful_batches"], partial["stats"]["failed_batches"], flush=True)
    """
    proc = subprocess.Popen([sys.executable, "-u", "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.strip() == "DONE 20":
                proc.send_signal(signal.SIGINT)
                break
        out, _ = proc.communicate(timeout=GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "PARTIAL 20 5" in out, "".join(seen) + out


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: EmbeddingConfig.openai(api_key="", max_batch_size=-1), "max_batch_size must be an integer >= 1, got -1"),
        (lambda: EmbeddingConfig.openai(api_key="", max_retries=-2), "max_retries must be an integer from 0 to"),
        (lambda: EmbeddingConfig.openai(api_key="", dimensions=0), "dimensions must be an integer from 1 to"),
        (lambda: EmbeddingConfig.openai(api_key="", timeout=-1), "timeout must be a positive number of seconds, got -1"),
        (lambda: EmbeddingConfig.openai(api_key="", circuit_breaker_cooldown=-1), "circuit_breaker_cooldown must be"),
        (lambda: EmbeddingConfig.local(fake_models.exact, max_queue=-5), "max_queue (None for no bound) must be an integer >= 1, got -5"),
        (lambda: EmbeddingConfig.local(fake_models.exact, max_concurrency=0), "max_concurrency must be an integer >= 1, got 0"),
    ],
)
def test_bad_config_arguments_name_the_argument(make, needle):
    with pytest.raises(ValueError) as info:
        make()
    assert needle in str(info.value)
    assert "unsigned" not in str(info.value) and "integral type" not in str(info.value)


def test_bad_call_arguments_name_the_argument():
    client = EmbeddingClient(EmbeddingConfig.local(fake_models.exact))
    with pytest.raises(ValueError, match=r"timeout_ms must be a positive number of milliseconds, got -1\b"):
        client.embed_batch_parallel([["a"]], timeout_ms=-1)
    with pytest.raises(ValueError, match="max_concurrency must be an integer >= 1, got -3"):
        client.embed_batch_parallel([["a"]], max_concurrency=-3)


def test_interpreter_exit_while_daemon_threads_are_inside_embed_is_clean():
    # Daemon threads waiting in embed (HTTP, a hanging server), embed_batch_parallel and a local
    # model's call at exit: no panic text, no traceback, the exit code kept.
    code = """
        import sys, threading, time
        from gilkit_embed import EmbeddingClient, EmbeddingConfig
        from gilkit_embed.testing import FaultServer
        import embed_fake_models as fake

        server = FaultServer(timeout_sleep=60)
        http = EmbeddingClient(EmbeddingConfig.openai(api_key="k", base_url=server.base_url, timeout=120))
        local = EmbeddingClient(EmbeddingConfig.local(fake.Slow(30)))
        for call in (
            lambda: http.embed("@timeout at exit"),
            lambda: http.embed_batch_parallel([["@timeout a"], ["@timeout b"]]),
            lambda: local.embed("slow at exit"),
        ):
            threading.Thread(target=call, daemon=True).start()
        time.sleep(0.3)
        print("EXITING", flush=True)
        sys.exit(4)
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=GUARD, env=env
        )
        assert (proc.returncode, proc.stdout.strip()) == (4, "EXITING"), proc.stderr
        assert proc.stderr == "", proc.stderr
