"""OpenAI-compatible endpoints on loopback: embedding through OpenAIEmbedder (Rust, gilkit-embed)
and answer generation through a chat endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from rag_fakes import hash_vector

from gilkit_rag import EmbeddingError, OpenAIEmbedder, ParallelRAG


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        if self.path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            if any("FAIL" in t for t in inputs):
                return self._send(500, {"error": {"message": "injected", "type": "server_error"}})
            data = [{"object": "embedding", "index": i, "embedding": hash_vector(t).tolist()} for i, t in enumerate(inputs)]
            return self._send(200, {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        if self.path == "/v1/chat/completions":
            answer = "From the sources: owls hunt at night [1]."
            return self._send(200, {
                "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
            })
        self._send(404, {"error": {"message": "not found"}})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    requests: list[tuple[str, dict[str, Any]]]


@pytest.fixture
def endpoint() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def base_url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def test_openai_embedder_ingest_and_query(tmp_path: Path, endpoint: _Server) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"d{i}.txt").write_text(f"Note {i}: " + ("FAIL here" if i == 4 else f"topic {i}"), encoding="utf-8")
    emb = OpenAIEmbedder("tiny", base_url=base_url(endpoint), api_key="k", max_retries=0)
    assert emb.model_id == "openai/tiny"
    assert len(emb.embed_query("hello")) == 32
    rag = ParallelRAG(tmp_path / "db", embedder=emb)
    report = rag.ingest([docs], progress=False, embed_batch=1, retries=0)
    assert report.documents == 5
    assert [Path(f.path).name for f in report.failures] == ["d4.txt"]
    assert "500" in report.failures[0].reason
    hits = rag.query("Note 2: topic 2", k=1)
    assert Path(hits[0].source).name == "d2.txt" and hits[0].score > 0.9999
    with pytest.raises(EmbeddingError):
        emb.embed_passages(["FAIL"])
    with pytest.raises(ValueError, match="base_url"):
        OpenAIEmbedder("m", base_url="ftp://nowhere")


def test_answer_through_a_chat_endpoint(tmp_path: Path, endpoint: _Server) -> None:
    pytest.importorskip("openai")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "owls.txt").write_text("Owls hunt small mammals at night.", encoding="utf-8")
    (docs / "bread.txt").write_text("Bread needs flour and yeast.", encoding="utf-8")
    emb = OpenAIEmbedder("tiny", base_url=base_url(endpoint), api_key="k")
    rag = ParallelRAG(tmp_path / "db", embedder=emb)
    rag.ingest([docs], progress=False)
    answer = rag.answer("Owls hunt small mammals at night.", k=1, chat_model="chat-1", base_url=base_url(endpoint), api_key="k")
    assert answer.text == "From the sources: owls hunt at night [1]."
    assert Path(answer.hits[0].source).name == "owls.txt"
    path, request = endpoint.requests[-1]
    assert path == "/v1/chat/completions" and request["model"] == "chat-1"
    prompt = request["messages"][-1]["content"]
    assert "Owls hunt small mammals at night." in prompt and "owls.txt" in prompt
